"""Sizes on the command line (``10G``, ``512M``, ``1T``, bytes) and in human output."""

from __future__ import annotations

import argparse
import re
from fractions import Fraction

#: Binary multiples, as Hyper-V's own "GB" means GiB.
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``"10G"``, ``"512M"``, ``"1.5T"``, ``"4096"``, ``"2MiB"`` (binary units).

    Raises :class:`ValueError` for anything else, or a fraction that is not whole bytes.
    """
    m = _SIZE_RE.match(text)
    if m is None:
        raise ValueError(f"invalid size {text!r} (use bytes or a number with K, M, G, T)")
    # Fraction keeps "1.5G" exact; float would round large values.
    value = Fraction(m.group(1)) * _UNITS[m.group(2).upper()]
    if value.denominator != 1:
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


def size_arg(text: str) -> int:
    """argparse ``type=`` for a positive size (a bad one is a usage error, exit 2)."""
    try:
        value = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return value


def human_size(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; exact bytes below 1 KiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"
