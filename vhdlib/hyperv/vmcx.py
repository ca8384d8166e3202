"""The binary ``.vmcx`` configuration of Hyper-V on Windows Server 2016 and later: refused.

Microsoft has not published the format, and no public prose description of it is precise
enough to read drive paths from reliably: the one public look (Altaro, "Hyper-V's relationship
with virtual machine XML files") calls it "a larger, undocumented file
format" and shows only a hex dump in which the old XML's strings are visible. The readers that
exist are AGPL code, which this project neither vendors nor copies, and guessing at a
journalled binary format (a file whose log has pending entries says one thing on disk and
another once replayed) is exactly the doubtful structure vhdlib refuses. So a ``.vmcx`` is
detected and refused with a typed reason; the operator reads the attachment on the host
(``Get-VMHardDiskDrive -VMName ...``), which the next steps say.
"""

from __future__ import annotations

import os

from vhdlib.hyperv.errors import ConfigError, UnsupportedConfigError

SUFFIX = ".vmcx"

REASON = ("the binary .vmcx configuration of Hyper-V 2016 and later has no public "
          "description good enough to read drive paths from; vhdmend does not guess "
          "(run Get-VMHardDiskDrive on the Hyper-V host instead)")


def is_vmcx(path: str) -> bool:
    """Whether ``path`` names a ``.vmcx`` configuration (by its suffix, any case)."""
    return path.lower().endswith(SUFFIX)


def read(path: str) -> None:
    """Refuse ``path``: :class:`UnsupportedConfigError` for a ``.vmcx`` file (always)."""
    if not is_vmcx(path):
        raise ConfigError("not a .vmcx file", path=path)
    if not os.path.isfile(path):
        raise ConfigError("not a regular file", path=path)
    raise UnsupportedConfigError(REASON, path=path)
