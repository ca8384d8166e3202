"""Errors of reading Hyper-V configurations (under :mod:`vhdlib.errors`' fault split)."""

from __future__ import annotations

from vhdlib.errors import ImageError, UnsupportedError


class ConfigError(ImageError):
    """A VM configuration file is malformed (not XML, wrong root, a bad value)."""

    code = "bad_vm_config"


class UnsafeConfigError(ConfigError):
    """A configuration uses XML features a hostile file abuses (DTD, entities): refused."""

    code = "unsafe_vm_config"


class UnsupportedConfigError(UnsupportedError):
    """A configuration format vhdlib does not read (the binary ``.vmcx`` of 2016+)."""

    code = "unsupported_vm_config"
