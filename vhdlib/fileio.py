"""Positional file I/O on every platform vhdlib runs on.

Linux and the BSDs have ``pread``/``pwrite``/``preadv``/``pwritev`` and
``posix_fallocate``; Windows has none of them (and macOS lacks ``posix_fallocate``).
Everything in vhdlib goes through these functions: native calls where they exist, and
otherwise a seek and a read or write under a per-descriptor lock (so positional calls
from two threads never interleave their seeks). The names match ``os``'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeGuard, cast

from vhdlib.errors import InsufficientSpaceError, UsageError

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


class WriteTracker:
    """Records every positional write while installed (a debugging and test aid, after
    pycdlib's PYCDLIB_TRACK_WRITES): ``with WriteTracker() as t: ...`` then
    :meth:`overlaps` tells whether any byte of a file range was written twice."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, int, int]] = []  # (path, offset, length)
        self._paths: dict[int, str] = {}

    def record(self, fd: int, offset: int, length: int) -> None:
        path = self._paths.get(fd)
        if path is None:
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                path = f"fd:{fd}"
            self._paths[fd] = path
        self.writes.append((path, offset, length))

    def ranges(self, path: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
        """``(start, end)`` of the writes to ``path`` within ``[lo, hi)``, in order."""
        real = os.path.realpath(path)
        out = []
        for p, off, n in self.writes:
            if p != real:
                continue
            start, end = max(off, lo), off + n if hi is None else min(off + n, hi)
            if end > start:
                out.append((start, end))
        return out

    def overlaps(self, path: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
        """Byte ranges of ``path`` within ``[lo, hi)`` that were written more than once."""
        twice: list[tuple[int, int]] = []
        reach = -1
        for start, end in sorted(self.ranges(path, lo, hi)):
            if start < reach:
                twice.append((start, min(end, reach)))
            reach = max(reach, end)
        return twice

    def __enter__(self) -> WriteTracker:
        global _tracker
        _tracker = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _tracker
        _tracker = None


_tracker: WriteTracker | None = None


def pwrite(fd: int, data: Buffer, offset: int) -> int:
    """Write ``data`` at ``offset``; returns the bytes written."""
    if _tracker is not None:
        _tracker.record(fd, offset, len(memoryview(data).cast("B")))
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
    if _tracker is not None:
        _tracker.record(fd, offset, sum(len(memoryview(b).cast("B")) for b in buffers))
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


def is_full_volume(exc: BaseException) -> TypeGuard[OSError]:
    """True for the errors a full volume or an exhausted quota raises."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_all(fd: int, buffers: Sequence[Buffer], offset: int, *, path: str) -> None:
    """Write every byte of ``buffers`` at ``offset``, looping over short writes.

    The one place image writes of both formats go through: a full volume becomes
    :class:`InsufficientSpaceError` naming ``path`` and the offset.
    """
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while views:
        try:
            # One buffer: a plain pwrite (the syscall crash tests record); more: pwritev.
            n = pwrite(fd, views[0], offset) if len(views) == 1 else pwritev(fd, views, offset)
        except OSError as e:
            if is_full_volume(e):
                raise InsufficientSpaceError(f"no space left writing at {offset}",
                                             path=path) from e
            raise
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_sync_file_range = _load_sync_file_range()
#: sync_file_range(2) flag: start writing out the dirty pages not yet under write-out.
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages in ``[offset, offset+length)``
    (``length`` 0: to the end of the file) to the device now, without waiting.

    Only a hint for speed: the device writes while the caller goes on reading, so the next
    ``fsync`` has less left to wait for. It makes nothing durable (``fsync`` still does);
    where ``sync_file_range`` is missing or fails it does nothing.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


def will_need(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start reading ``[offset, offset+length)`` of ``fd`` into the page
    cache now, without waiting (``posix_fadvise`` WILLNEED).

    Only a hint for speed: many small scattered reads (a VHD's sector bitmaps) issued at
    once instead of one device round trip each. Where it is missing or fails it does nothing.
    """
    if _WILLNEED is not None:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, _WILLNEED)


_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)


def forget(fd: int, offset: int, length: int) -> None:
    """Tell the kernel ``[offset, offset+length)`` of ``fd`` will not be read again, so
    its clean cached pages can be freed now (``posix_fadvise`` DONTNEED).

    Only a hint: it never changes what the file reads (dirty pages are kept and written
    back as usual). A copy drops its output's pages once verified instead of filling the
    page cache with gigabytes nobody reads again (GNU dd's ``oflag=nocache``): the next
    writes reuse those freed pages, which on a virtual machine whose free memory goes
    back to the host (free page reporting) costs a fraction of touching fresh memory.
    Where it is missing or fails it does nothing.
    """
    if _DONTNEED is not None and length > 0:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, _DONTNEED)


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


@contextlib.contextmanager
def new_image(path: str, needed: int = 0) -> Iterator[int]:
    """Create ``path`` (never over an existing file) and yield its descriptor.

    When the body fails the file is closed and removed: a new image is never left
    half-written. A full volume becomes :class:`InsufficientSpaceError`.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError as e:
        raise UsageError("target already exists", path=path) from e
    except OSError as e:
        raise UsageError(f"cannot create: {e.strerror}", path=path) from e
    try:
        yield fd
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if is_full_volume(exc):
            raise InsufficientSpaceError(f"no space to create the image ({exc.strerror})",
                                         path=path, needed=needed) from exc
        raise
