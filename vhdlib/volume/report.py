"""What a scan returns: per partition its scheme, file system, cluster size and free byte
ranges (absolute in the virtual disk), or why it is kept whole."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from vhdlib.volume.ranges import Range, merge, whole_blocks


@dataclass(frozen=True)
class PartitionReport:
    """One partition's verdict. ``kept`` names the reason when every block is kept."""

    number: int
    scheme: str
    start: int
    length: int
    type: str
    name: str = ""
    file_system: str | None = None
    cluster_size: int | None = None
    free_ranges: tuple[Range, ...] = ()
    kept: str | None = None

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def free_bytes(self) -> int:
        return sum(end - start for start, end in self.free_ranges)

    def reclaimable_blocks(self, block_size: int) -> int:
        """How many blocks of ``block_size`` lie wholly in this partition's free space."""
        return sum(1 for _ in whole_blocks(self.free_ranges, block_size))

    def to_dict(self, block_size: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "number": self.number, "scheme": self.scheme, "start": self.start,
            "length": self.length, "type": self.type, "name": self.name,
            "file_system": self.file_system, "cluster_size": self.cluster_size,
            "free_bytes": self.free_bytes, "kept_whole": self.kept,
        }
        if block_size:
            out["reclaimable_blocks"] = self.reclaimable_blocks(block_size)
        return out


@dataclass(frozen=True)
class VolumeMap:
    """The scan of one virtual disk. Bytes outside every free range are kept."""

    virtual_size: int
    scheme: str
    sector_size: int
    partitions: tuple[PartitionReport, ...]
    kept: str | None = None  # the whole disk kept (e.g. a damaged partition table)
    notes: tuple[str, ...] = ()
    _merged: list[Range] = field(init=False, repr=False, compare=False)
    _starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        merged = merge(r for p in self.partitions for r in p.free_ranges)
        # Derived caches on a frozen dataclass (not fields: equality stays by content).
        object.__setattr__(self, "_merged", merged)
        object.__setattr__(self, "_starts", [start for start, _ in merged])

    @property
    def free_ranges(self) -> list[Range]:
        """Every free byte range of the disk, merged and sorted."""
        return list(self._merged)

    @property
    def free_bytes(self) -> int:
        return sum(end - start for start, end in self._merged)

    def reclaimable_blocks(self, block_size: int) -> list[int]:
        """Indexes of the blocks of ``block_size`` whose every byte lies in free clusters."""
        return list(whole_blocks(self._merged, block_size))

    def droppable(self, offset: int, length: int) -> bool:
        """True when every byte of ``[offset, offset + length)`` is free."""
        if length <= 0:
            return False
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and self._merged[i][1] >= offset + length

    def to_dict(self, block_size: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "virtual_size": self.virtual_size, "scheme": self.scheme,
            "sector_size": self.sector_size, "kept_whole": self.kept,
            "notes": list(self.notes), "free_bytes": self.free_bytes,
            "partitions": [p.to_dict(block_size) for p in self.partitions],
        }
        if block_size:
            out["block_size"] = block_size
            out["reclaimable_blocks"] = len(self.reclaimable_blocks(block_size))
        return out
