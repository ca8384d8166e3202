"""Positional file I/O on every platform vhdlib runs on.

Linux and the BSDs have ``pread``/``pwrite``/``preadv``/``pwritev`` and
``posix_fallocate``; Windows has none of them (and macOS lacks ``posix_fallocate``).
Everything in vhdlib goes through these functions: native calls where they exist, and
otherwise a seek and a read or write under a per-descriptor lock (so positional calls
from two threads never interleave their seeks). The names match ``os``'s.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

#: True where the kernel offers positional I/O (everything but Windows).
NATIVE = all(hasattr(os, name) for name in ("pread", "pwrite", "preadv", "pwritev"))

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()

Buffer = bytes | bytearray | memoryview


def _lock(fd: int) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(fd)
        if lock is None:
            lock = _locks[fd] = threading.Lock()
        return lock


def pread(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes at ``offset`` (short at the end of the file)."""
    if NATIVE:
        return os.pread(fd, n, offset)
    with _lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)


def pwrite(fd: int, data: Buffer, offset: int) -> int:
    """Write ``data`` at ``offset``; returns the bytes written."""
    if NATIVE:
        return os.pwrite(fd, data, offset)
    with _lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


def preadv(fd: int, buffers: Sequence[memoryview | bytearray], offset: int) -> int:
    """Fill ``buffers`` in order from ``offset``; returns the bytes read."""
    if NATIVE:
        return os.preadv(fd, buffers, offset)
    total = 0
    with _lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        for buf in buffers:
            view = memoryview(buf).cast("B")
            data = os.read(fd, len(view))
            view[:len(data)] = data
            total += len(data)
            if len(data) < len(view):
                break
    return total


def pwritev(fd: int, buffers: Sequence[Buffer], offset: int) -> int:
    """Write ``buffers`` in order at ``offset``; returns the bytes written."""
    if NATIVE:
        return os.pwritev(fd, buffers, offset)
    total = 0
    with _lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        for buf in buffers:
            view = memoryview(buf).cast("B")
            while len(view):
                n = os.write(fd, view)
                total += n
                view = view[n:]
    return total


def allocate(fd: int, offset: int, length: int) -> None:
    """Reserve ``[offset, offset+length)`` on the volume without writing it.

    ``posix_fallocate`` where it exists; elsewhere the file is extended (NTFS allocates
    the clusters of a non-sparse file that grows; file systems that make it sparse get
    no reservation, which the plan's space check still covers).
    """
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, offset, length)
        return
    end = offset + length
    if os.fstat(fd).st_size < end:
        os.ftruncate(fd, end)
