"""Where new VHDX payload and sector-bitmap blocks go: the allocation end, 1 MiB aligned
(MS-VHDX 2.5: objects are 1 MiB aligned)."""

from __future__ import annotations

import os

from vhdlib import fileio
from vhdlib.vhdx import structs as S

MiB = S.MiB
_ZERO_MIB = bytes(MiB)


def align_up(n: int, a: int) -> int:
    """``n`` rounded up to a multiple of ``a``."""
    return -(-n // a) * a


class Allocation:
    """The first free offset after everything referenced, and the space past it."""

    def __init__(self, fd: int, path: str, end: int) -> None:
        self.fd = fd
        self.path = path
        self.end = end

    def take(self, size: int) -> int:
        """Reserve ``size`` bytes (1 MiB aligned) at the allocation end."""
        off = self.end
        self.end = off + align_up(size, MiB)
        return off

    def zero_fill(self, start: int, end: int) -> None:
        """Make [start, end) read zero: writes zeros below EOF, extends above it."""
        real = os.fstat(self.fd).st_size
        pos = start
        stop = min(end, real)
        while pos < stop:
            n = min(len(_ZERO_MIB), stop - pos)
            fileio.write_all(self.fd, [memoryview(_ZERO_MIB)[:n]], pos, path=self.path)
            pos += n
        if end > real:
            os.ftruncate(self.fd, end)

    def new_bitmap_block(self) -> int:
        """A zeroed 1 MiB sector-bitmap block at the allocation end."""
        off = self.take(MiB)
        self.zero_fill(off, off + MiB)
        return off
