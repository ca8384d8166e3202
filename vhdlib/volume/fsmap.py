"""What a file-system reader returns: its name, cluster size and free byte ranges."""

from __future__ import annotations

from dataclasses import dataclass

from vhdlib.volume.ranges import Range


@dataclass(frozen=True)
class FsMap:
    """The allocation map of one volume; ``free`` is relative to the volume's first byte."""

    file_system: str
    cluster_size: int
    free: tuple[Range, ...]
    notes: tuple[str, ...] = ()

    @property
    def free_bytes(self) -> int:
        return sum(end - start for start, end in self.free)
