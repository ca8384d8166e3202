"""The dynamic disk header of a dynamic or differencing VHD (spec "Dynamic Disk Header
Format"): where it is, its cookie, checksum and version."""

from __future__ import annotations

from collections.abc import Callable

from vhdlib.errors import ChecksumError, ImageError, UnsupportedError
from vhdlib.vhd.structs import (
    HEADER_COOKIE,
    HEADER_SIZE,
    HEADER_VERSION,
    SECTOR_SIZE,
    DynamicHeader,
)


def read_header(read: Callable[[int, int], bytes], offset: int, size: int, *, lenient: bool,
                path: str, warnings: list[str]) -> DynamicHeader:
    """The header at ``offset`` (the footer's Data Offset) of a file of ``size`` bytes."""
    # Spec "Data Offset": absolute offset of the dynamic header.
    if offset % SECTOR_SIZE or offset < SECTOR_SIZE or offset + HEADER_SIZE > size:
        raise ImageError(f"dynamic header offset {offset} outside the file ({size} bytes)",
                         path=path)
    raw = read(HEADER_SIZE, offset)
    if raw[:8] != HEADER_COOKIE:
        raise ImageError(f"no 'cxsparse' dynamic header at offset {offset}", path=path)
    h = DynamicHeader.parse(raw)
    if not h.checksum_ok:
        # Spec "Dynamic Disk Header Format", Checksum (dfvfs image-differential.vhd).
        msg = (f"dynamic header checksum mismatch: stored 0x{h.checksum:08x}, computed "
               f"0x{h.compute_checksum():08x}")
        if not lenient:
            raise ChecksumError(msg + " (open with lenient to read anyway)", path=path)
        warnings.append(msg + " (accepted: lenient)")
    if h.header_version != HEADER_VERSION:
        raise UnsupportedError(f"dynamic header version 0x{h.header_version:08x}", path=path)
    return h
