"""Foresight for ``--reclaim fs`` (issue 13, item 4): how many bytes a chain stores that its
guest's file systems mark free, i.e. what ``remediate --reclaim fs`` would leave out.

Opt-in (``vhdmend scan --reclaimable``): it opens each chain, reads the guest's partition
table and allocation maps (NTFS ``$Bitmap``, ext block bitmaps) through the chain, and the
chain's block maps (BATs); never file data. The count is exact in bytes; a remediation drops
whole output blocks, so it drops at most this much.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import vhdlib
from vhdlib.errors import VhdlibError
from vhdlib.extents import ExtentKind
from vhdlib.volume import VolumeMap, scan
from vhdlib.volume.ranges import Range


@dataclass(frozen=True)
class Reclaimable:
    """One chain's verdict: stored bytes in free clusters, or why it was not measured."""

    reclaimable_bytes: int | None
    free_bytes: int = 0  # what the guest's file systems mark free (stored or not)
    kept: list[str] = field(default_factory=list)  # partitions kept whole, and why
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reclaimable_bytes": self.reclaimable_bytes, "fs_free_bytes": self.free_bytes,
                "kept_whole": list(self.kept), "error": self.error}


def overlap(a: Iterable[Range], b: list[Range]) -> int:
    """Bytes in both of two sorted, non-overlapping range lists (``b`` a list)."""
    total = 0
    j = 0
    for s, e in a:
        while j < len(b) and b[j][1] <= s:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            total += min(e, b[k][1]) - max(s, b[k][0])
            k += 1
    return total


def _stored(disk: vhdlib.Disk) -> Iterator[Range]:
    for ext in disk.extents():
        if ext.kind is ExtentKind.DATA:
            yield ext.offset, ext.offset + ext.length


def _kept(vmap: VolumeMap) -> list[str]:
    out = [f"disk: {vmap.kept}"] if vmap.kept else []
    out += [f"partition {p.number}: {p.kept}" for p in vmap.partitions if p.kept]
    return out


def measure(leaf: str) -> Reclaimable:
    """Open the chain ending at ``leaf`` read-only and count its stored bytes the guest's
    file systems mark free. A chain that cannot be opened gets the error, not a figure."""
    try:
        with vhdlib.open(leaf) as disk:
            vmap = scan(disk)
            stored = overlap(_stored(disk), vmap.free_ranges)
    except VhdlibError as e:
        return Reclaimable(None, error=str(e))
    return Reclaimable(stored, vmap.free_bytes, _kept(vmap))
