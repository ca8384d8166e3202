"""What the volume layer reads: anything with ``read(offset, length)`` and ``virtual_size``.

:class:`Window` bounds a partition so that no parser can read past it: a structure that
points outside its partition is a :class:`VolumeStructureError`, never a read of a
neighbour's bytes.
"""

from __future__ import annotations

import os
from typing import Protocol

from vhdlib.volume.errors import VolumeStructureError


class Readable(Protocol):
    """A virtual disk as the volume layer sees it (e.g. :func:`vhdlib.open`'s ``Disk``)."""

    @property
    def virtual_size(self) -> int: ...

    def read(self, offset: int, size: int) -> bytes: ...


class Window:
    """Bytes ``[start, start + length)`` of a :class:`Readable`, read relative to ``start``."""

    def __init__(self, disk: Readable, start: int, length: int) -> None:
        if start < 0 or length < 0 or start + length > disk.virtual_size:
            raise VolumeStructureError(
                f"range {start}+{length} lies outside the disk ({disk.virtual_size} bytes)")
        self.disk = disk
        self.start = start
        self.length = length

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` inside the window; out of bounds is a structure error."""
        if offset < 0 or size < 0 or offset + size > self.length:
            raise VolumeStructureError(
                f"read of {size} bytes at {offset} lies outside the volume "
                f"({self.length} bytes)")
        data = self.disk.read(self.start + offset, size)
        if len(data) != size:
            raise VolumeStructureError(f"short read at {self.start + offset}")
        return data


class FileDisk:
    """A raw image file as a :class:`Readable` (tests, and raw images beside VHD/VHDX)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self.virtual_size = os.fstat(self._f.fileno()).st_size

    def read(self, offset: int, size: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(size)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> FileDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
