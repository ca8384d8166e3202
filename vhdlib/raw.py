"""Raw image files: the bytes of the disk and nothing else (output of convert --format raw)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from uuid import UUID

from vhdlib import fileio
from vhdlib.errors import ImageError, UsageError
from vhdlib.extents import Segment, SegmentState
from vhdlib.layer import DiskType, Layer

SECTOR_SIZE = 512


class RawLayer(Layer):
    """A raw image: one PRESENT segment, file offset = virtual offset."""

    format = "raw"

    def __init__(self, path: str, fd: int, *, writable: bool = False,
                 lenient: bool = False) -> None:
        super().__init__(path, fd, writable=writable, lenient=lenient)
        self.disk_type = DiskType.FIXED
        size = os.fstat(fd).st_size
        if size % SECTOR_SIZE or size == 0:
            raise ImageError(f"raw image size {size} is not a positive multiple of "
                             f"{SECTOR_SIZE}", path=path)
        self.virtual_size = size

    @property
    def link_id(self) -> UUID:
        """Raw images carry no identity: the nil UUID."""
        return UUID(int=0)

    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        if offset % SECTOR_SIZE or length % SECTOR_SIZE or offset < 0 or length < 0 \
                or offset + length > self.virtual_size:
            raise UsageError(f"range [{offset}, +{length}) invalid for a raw image of "
                             f"{self.virtual_size} bytes", path=self.path)
        if length:
            yield Segment(offset, length, SegmentState.PRESENT, offset)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write sector-aligned ``data`` at ``offset`` (the file never grows)."""
        self._require_writable()
        mv = memoryview(data).cast("B")
        list(self.segments(offset, len(mv)))  # validates the range
        fileio.write_all(self._fd, [mv], offset, path=self.path)


def create(path: str | os.PathLike[str], size: int, sparse: bool = False) -> RawLayer:
    """Create a raw image of ``size`` bytes, allocated with ``posix_fallocate`` unless
    ``sparse``; returns it opened writable. Refuses an existing target."""
    path = os.fspath(path)
    if size <= 0 or size % SECTOR_SIZE:
        raise UsageError(f"size {size} is not a positive multiple of {SECTOR_SIZE}", path=path)
    with fileio.new_image(path, needed=0 if sparse else size) as fd:
        if sparse:
            os.ftruncate(fd, size)
        else:
            fileio.allocate(fd, 0, size)
        return RawLayer(path, fd, writable=True)
