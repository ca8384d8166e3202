"""Size parsing and formatting (table-driven)."""

from __future__ import annotations

import argparse

import pytest

from vhdmend.sizes import human_size, parse_size, size_arg


@pytest.mark.parametrize(("text", "expected"), [
    ("4096", 4096),
    ("512M", 512 << 20),
    ("10G", 10 << 30),
    ("10g", 10 << 30),
    ("1T", 1 << 40),
    ("2MiB", 2 << 20),
    ("2MB", 2 << 20),
    ("1.5G", 3 << 29),
    (" 64K ", 64 << 10),
    ("100B", 100),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "10Q", "-1G", "1.3", "ten", "1e9", "0x100"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_size_arg_rejects_zero() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        size_arg("0")


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (10 << 30, "10.0 GiB"),
    (3 << 40, "3.0 TiB"),
])
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text
