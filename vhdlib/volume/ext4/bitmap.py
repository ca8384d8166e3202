"""The block bitmaps of all groups as one bitmap of the volume's clusters (kernel
Documentation/filesystems/ext4/bitmaps.rst: one bit per cluster of the group, from its
first block; group g's bits follow group g - 1's, counted from s_first_data_block).

A group wholly used or wholly free shares one bytes object with every other such group:
a volume of terabytes is mostly such groups, and holding each group's block would cost
volume size / 32768 bytes of memory (512 MiB for 16 TiB of 4 KiB blocks).
"""

from __future__ import annotations

from vhdlib.volume.ranges import first_clear


class VolumeBitmap:
    """Per-group block bitmaps of ``clusters_per_group`` bits, appended in group order."""

    def __init__(self, clusters_per_group: int) -> None:
        self.bits = clusters_per_group
        size = clusters_per_group // 8
        self._full, self._empty = b"\xff" * size, bytes(size)
        self._groups: list[bytes] = []

    def append(self, bitmap: bytes) -> None:
        """Add the next group's bitmap (its first clusters_per_group / 8 bytes)."""
        if bitmap == self._full:
            bitmap = self._full
        elif bitmap == self._empty:
            bitmap = self._empty
        self._groups.append(bitmap)

    def first_clear(self, first: int, count: int) -> int | None:
        """The first clear cluster of ``[first, first + count)``, or None when all are
        set; clusters past the last group read as clear."""
        end = first + count
        while first < end:
            group, offset = divmod(first, self.bits)
            if group >= len(self._groups):
                return first
            n = min(end - first, self.bits - offset)
            bitmap = self._groups[group]
            if bitmap is not self._full:
                clear = first_clear(bitmap, offset, n)
                if clear is not None:
                    return group * self.bits + clear
            first += n
        return None
