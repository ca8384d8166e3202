"""VHD parent locators (spec "Parent Locator Entries"): from the entries to candidate
parent paths, and the locator texts :func:`vhdlib.vhd.create` writes."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from vhdlib.layer import ParentLink
from vhdlib.vhd.layout import align_up
from vhdlib.vhd.structs import (
    PLATFORM_CODE_MACX,
    PLATFORM_CODE_W2KU,
    PLATFORM_CODE_W2RU,
    PLATFORM_CODE_WI2K,
    PLATFORM_CODE_WI2R,
    SECTOR_SIZE,
    DynamicHeader,
)

#: Locator data larger than this is not a path (W2ku paths are at most 32767 UTF-16 units).
MAX_LOCATOR_LENGTH = 65536
#: Locators tried first to last: relative paths survive a copied chain best.
_ORDER = [PLATFORM_CODE_W2RU, PLATFORM_CODE_W2KU, PLATFORM_CODE_MACX, PLATFORM_CODE_WI2R,
          PLATFORM_CODE_WI2K]


@dataclass
class LocatorScan:
    """What the parent locators of one differencing VHD say."""

    #: ``(label, path)`` candidates for the parent, best first.
    candidates: list[tuple[str, str]] = field(default_factory=list)
    #: File ranges the locator data occupies (metadata, for overlap checks).
    ranges: list[tuple[int, int]] = field(default_factory=list)
    #: End of the reserved locator spaces (bounds where the first slot goes).
    space_end: int = 0
    warnings: list[str] = field(default_factory=list)

    def add(self, label: str, path: str) -> None:
        # Same path from another locator is kept: the error lists every locator tried
        # (find_parent opens each real file once).
        if (label, path) not in self.candidates:
            self.candidates.append((label, path))


def read_locators(header: DynamicHeader, child_path: str, size: int,
                  pread: Callable[[int, int], bytes]) -> LocatorScan:
    """Candidate parent paths of the child at ``child_path`` (a file of ``size`` bytes):
    W2ru, W2ku, MacX, Wi2r, Wi2k locators, then the header's parent name."""
    scan = LocatorScan()
    child_dir = os.path.dirname(os.path.abspath(child_path))
    locs = sorted((loc for loc in header.locators if loc.platform_code in _ORDER),
                  key=lambda loc: _ORDER.index(loc.platform_code))
    for loc in locs:
        code = loc.platform_code.decode("ascii")
        if loc.data_length == 0 or loc.data_length > MAX_LOCATOR_LENGTH \
                or loc.data_offset + loc.data_length > size:
            scan.warnings.append(f"{code} locator data at {loc.data_offset} "
                                 f"(+{loc.data_length}) is outside the file; ignored")
            continue
        # "data length" bytes, whatever the space unit (Windows writes bytes).
        # Only the bytes read count as metadata (overlap checks): the space field's unit
        # is ambiguous. The reserved space still bounds where the first slot goes (our
        # W2ru reserves 64 KiB), so a post-crash allocation lands where create's did.
        scan.ranges.append((loc.data_offset,
                            loc.data_offset + align_up(loc.data_length, SECTOR_SIZE)))
        scan.space_end = max(scan.space_end, min(size, loc.data_offset + loc.space_bytes()))
        raw = pread(loc.data_length, loc.data_offset)
        if loc.platform_code in (PLATFORM_CODE_W2RU, PLATFORM_CODE_W2KU):
            text = raw.decode("utf-16-le", errors="replace")
        elif loc.platform_code == PLATFORM_CODE_MACX:
            text = raw.decode("utf-8", errors="replace")
        else:
            text = raw.decode("latin-1")
        text = text.rstrip("\0")
        if not text:
            continue
        if loc.platform_code in (PLATFORM_CODE_W2RU, PLATFORM_CODE_WI2R):
            rel = text.replace("\\", "/")
            while rel.startswith("./"):
                rel = rel[2:]
            scan.add(f"{code} {text}", os.path.join(child_dir, rel))
        elif loc.platform_code == PLATFORM_CODE_MACX:
            p = unquote(urlparse(text).path) if "://" in text else text
            scan.add(f"{code} {text}", p)
            scan.add(f"{code} {text} (by name)", os.path.join(child_dir, posixpath.basename(p)))
        else:
            # Absolute Windows path: as is (it may be a POSIX path we wrote), then by
            # basename in the child's folder (the usual case after copying a chain).
            scan.add(f"{code} {text}", text)
            base = text.replace("\\", "/").rsplit("/", 1)[-1]
            scan.add(f"{code} {text} (by name)", os.path.join(child_dir, base))
    name = header.parent_unicode_name
    if name:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        if base:
            scan.add(f"name {name}", os.path.join(child_dir, base))
    return scan


def parent_link(header: DynamicHeader, candidates: list[tuple[str, str]],
                child_path: str) -> ParentLink:
    """How the differencing child at ``child_path`` names its parent: the header's Parent
    Unique ID, the ``candidates`` of :func:`read_locators`, then a search of its folder."""
    return ParentLink(header.parent_unique_id, list(candidates),
                      os.path.dirname(os.path.abspath(child_path)))


def utf16le(text: str) -> bytes:
    """W2ku/W2ru locator data: UTF-16LE, no terminator."""
    return text.encode("utf-16-le")


def relative_locator(parent_path: str, child_path: str) -> str:
    """W2ru text: the parent relative to the child's folder, ``.\\`` and backslashes."""
    rel = os.path.relpath(os.path.abspath(parent_path),
                          os.path.dirname(os.path.abspath(child_path)))
    rel = rel.replace("/", "\\")
    return rel if rel.startswith("..") else ".\\" + rel
