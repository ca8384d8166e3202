"""The two VHD footers (spec "Hard Disk Footer Format"): the trailing one, and the copy at
offset 0 that dynamic and differencing disks keep for when the trailing one is lost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vhdlib.errors import ChecksumError, ImageError
from vhdlib.layer import Problem
from vhdlib.vhd.structs import (
    DISK_TYPE_DIFFERENCING,
    DISK_TYPE_DYNAMIC,
    FOOTER_COOKIE,
    FOOTER_SIZE,
    FOOTER_SIZE_OLD,
    HEADER_COOKIE,
    SECTOR_SIZE,
    Footer,
    unix_time,
)


@dataclass
class FooterChoice:
    """The footer in charge and where it lies."""

    footer: Footer
    #: The copy at offset 0 (``None`` when absent or not a footer).
    copy: Footer | None
    #: Position of the trailing footer; -1 when the copy is in charge (the caller computes
    #: it from the BAT: where the next allocation puts the footer).
    position: int
    #: True when the trailing footer is missing or damaged and the copy is used.
    from_copy: bool
    #: True when a trailing footer exists but fails its checksum.
    trailing_bad: bool
    warnings: list[str] = field(default_factory=list)


def choose_footer(read: Callable[[int, int], bytes], size: int, *, lenient: bool,
                  path: str) -> FooterChoice:
    """Pick the footer: the trailing one, else (dynamic) the copy at offset 0."""
    tail = read(FOOTER_SIZE, size - FOOTER_SIZE) if size >= FOOTER_SIZE else b""
    old = read(FOOTER_SIZE_OLD, size - FOOTER_SIZE_OLD)
    head = read(FOOTER_SIZE, 0) if size >= FOOTER_SIZE else b""
    warnings: list[str] = []
    trailing: Footer | None = None
    pos = size - FOOTER_SIZE
    if tail[:8] == FOOTER_COOKIE:
        trailing = Footer.parse(tail)
    elif old[:8] == FOOTER_COOKIE:
        # Spec "Hard Disk Footer Format": pre-2004 Virtual PC wrote 511 bytes.
        trailing = Footer.parse(old)
        pos = size - FOOTER_SIZE_OLD
        warnings.append("old 511-byte footer")
    copy = Footer.parse(head) if head[:8] == FOOTER_COOKIE else None
    trailing_bad = trailing is not None and not trailing.checksum_ok
    copy_ok = (copy is not None and copy.checksum_ok
               and copy.disk_type in (DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING))
    if trailing is not None and trailing.checksum_ok:
        return FooterChoice(trailing, copy, pos, False, trailing_bad, warnings)
    if copy_ok:
        assert copy is not None
        # Spec "Dynamic Hard Disk Image": the copy at offset 0 exists for exactly this.
        why = "damaged" if trailing is not None else "missing"
        warnings.append(f"trailing footer {why} (interrupted block allocation?); "
                        "using the footer copy at offset 0")
        return FooterChoice(copy, copy, -1, True, trailing_bad, warnings)
    if trailing is None and copy is None:
        raise ImageError("not a VHD: no 'conectix' footer at the end or at offset 0", path=path)
    # Spec "Checksum": ones' complement of the footer's byte sum.
    bad = trailing if trailing is not None else copy
    assert bad is not None
    msg = (f"footer checksum mismatch: stored 0x{bad.checksum:08x}, computed "
           f"0x{bad.compute_checksum():08x}")
    if not lenient:
        raise ChecksumError(msg + " (open with lenient to read anyway)", path=path)
    warnings.append(msg + " (accepted: lenient)")
    if trailing is not None:
        return FooterChoice(bad, copy, pos, False, trailing_bad, warnings)
    return FooterChoice(bad, copy, -1, True, trailing_bad, warnings)


def footer_problems(footer: Footer, *, from_copy: bool, trailing_bad: bool,
                    dynamic: bool) -> list[Problem]:
    """The trailing footer lost (repairable from the copy on a dynamic disk) or damaged."""
    if from_copy:
        return [Problem("footer_missing", "trailing footer missing or damaged; the copy at "
                        "offset 0 is valid", repairable=dynamic)]
    if trailing_bad or not footer.checksum_ok:
        return [Problem("footer_checksum", f"footer checksum stored 0x{footer.checksum:08x},"
                        f" computed 0x{footer.compute_checksum():08x}")]
    return []


def fixed_problems(data_size: int, virtual_size: int,
                   read: Callable[[int, int], bytes]) -> list[Problem]:
    """Spec "Fixed Hard Disk Image": the ``data_size`` bytes before the footer are the disk
    (exactly ``current_size``); a footer copy and a dynamic header there mean a dynamic disk
    whose footer says fixed (it would read as raw bytes, header and BAT included)."""
    out: list[Problem] = []
    if data_size != virtual_size:
        out.append(Problem("fixed_size", f"the footer's current size {virtual_size} differs "
                           f"from the {data_size}-byte data area before the footer"
                           + (" (its tail is not part of the disk)"
                              if data_size > virtual_size else "")))
    if data_size >= 2 * SECTOR_SIZE and read(8, 0) == FOOTER_COOKIE \
            and read(8, SECTOR_SIZE) == HEADER_COOKIE:
        out.append(Problem("fixed_layout", "a fixed disk whose data starts with a footer copy "
                           "and a dynamic header: a dynamic disk labelled fixed"))
    return out


def footer_info(f: Footer) -> dict[str, Any]:
    """The footer's facts for ``info()``."""
    return {
        "original_size": f.original_size,
        "creator_app": f.creator_app.decode("latin-1"),
        "creator_version": f"{f.creator_version >> 16}.{f.creator_version & 0xFFFF}",
        "creator_host_os": f.creator_host_os.decode("latin-1"),
        "timestamp": f.timestamp,
        "timestamp_unix": unix_time(f.timestamp),
        "uuid": str(f.unique_id),
        "saved_state": bool(f.saved_state),
        "footer_checksum": f"{f.checksum:08x}",
    }
