"""Reading a copy's source ahead, in a second thread, with O_DIRECT where it works.

The copy engine writes what it read; reading the next unit while the current one is
written keeps both the disk and the two cores busy. Source reads bypass the page cache
(``O_DIRECT``) when the layer's file and the unit allow it: the chain is read once and
never again, and on virtual machines copying it through the page cache costs more CPU
than the disk time. Whatever O_DIRECT cannot do (a file system without it, a unit at the
very end of a file, a layer that overlays its file in memory) is read the ordinary way:
the bytes are the same, only the path differs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import NamedTuple, cast

from vhdlib import fileio
from vhdlib.chain import Disk
from vhdlib.layer import Layer

#: O_DIRECT alignment of file offsets, lengths and buffer addresses (covers 512 and 4K
#: logical block devices).
ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)
#: Off switch (any value but "1" disables direct reads), for diagnosis.
ENABLED = os.environ.get("VHDMEND_DIRECT_IO", "1") == "1" and _O_DIRECT != 0

#: A unit to read: ``(virtual offset, length, layer index, file offset)``.
Unit = tuple[int, int, int, int]


class Buffer:
    """A bytearray with a page-aligned region (O_DIRECT needs aligned addresses)."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size + 2 * ALIGN)
        address = ctypes.addressof((ctypes.c_char * len(self.data)).from_buffer(self.data))
        #: Index of the first aligned byte.
        self.base = -address % ALIGN
        self.size = size


#: Buffers of finished read-aheads, reused by the next (a copy calls :func:`read_ahead`
#: once per window: fresh 8 MiB buffers each time cost a page fault per 4 KiB touched).
_spare: list[Buffer] = []
_spare_lock = threading.Lock()
_SPARE_MAX = 8


def _take_buffer(size: int) -> Buffer:
    with _spare_lock:
        for i, buf in enumerate(_spare):
            if buf.size == size:
                return _spare.pop(i)
    return Buffer(size)


def _give_back(buffers: list[Buffer]) -> None:
    with _spare_lock:
        _spare[:0] = buffers
        del _spare[_SPARE_MAX:]


def _direct_capable(layer: Layer) -> bool:
    """True when the layer's bytes are exactly its file's (no in-memory overlay)."""
    return layer.reads_file_bytes


class DirectFiles:
    """O_DIRECT descriptors of a disk's layers, opened on first use, ``None`` where not
    possible."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self._fds: dict[int, tuple[int, int] | None] = {}

    def get(self, level: int) -> tuple[int, int] | None:
        """``(fd, file size)`` for direct reads of layer ``level``, or ``None``."""
        if level in self._fds:
            return self._fds[level]
        entry: tuple[int, int] | None = None
        layer = self.disk.layers[level]
        if ENABLED and _direct_capable(layer):
            try:
                fd = os.open(layer.path, os.O_RDONLY | _O_DIRECT | getattr(os, "O_CLOEXEC", 0))
                entry = (fd, os.fstat(fd).st_size)
            except OSError:
                entry = None
        self._fds[level] = entry
        return entry

    def disable(self, level: int) -> None:
        entry = self._fds.get(level)
        if entry is not None:
            os.close(entry[0])
        self._fds[level] = None

    def close(self) -> None:
        for entry in self._fds.values():
            if entry is not None:
                os.close(entry[0])
        self._fds.clear()


def read_unit(disk: Disk, direct: DirectFiles | None, unit: Unit, buf: Buffer) -> int:
    """Read ``unit`` into ``buf``; returns the index in ``buf.data`` where its bytes start."""
    _off, n, level, fo = unit
    if direct is not None:
        entry = direct.get(level)
        if entry is not None:
            fd, size = entry
            lo = fo - fo % ALIGN
            hi = -(-(fo + n) // ALIGN) * ALIGN
            if hi <= size and hi - lo <= buf.size + ALIGN:
                view = memoryview(buf.data)[buf.base:buf.base + (hi - lo)]
                try:
                    got = fileio.preadv(fd, [view], lo)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    direct.disable(level)  # this file system refuses: read normally
                    got = -1
                finally:
                    view.release()
                if got == hi - lo:
                    return buf.base + (fo - lo)
    start = buf.base
    view = memoryview(buf.data)[start:start + n]
    try:
        disk.layers[level].pread_into(fo, view)
    finally:
        view.release()
    return start


_END = object()


class Marker:
    """An item of a unit stream that is not read: handed to the consumer in its place in
    the order (where one window's units end and the next's begin)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


class Ready(NamedTuple):
    """A unit read ahead: its bytes are ``buffer.data[start:start + unit length]``."""

    unit: Unit
    buffer: Buffer
    start: int
    #: What ``after`` returned for it, in the reading thread (``None`` without ``after``).
    extra: object


def read_ahead(disk: Disk, units: Iterable[Unit | Marker], unit_size: int, *,
               depth: int = 2, after: Callable[[Unit, Buffer, int], object] | None = None
               ) -> Generator[Ready | Marker, None, None]:
    """Yield a :class:`Ready` per unit in order, reading up to ``depth`` units ahead in a
    second thread (``units`` is iterated there too). A buffer is reused once the consumer
    asks for the next item; a :class:`Marker` is passed through, in order, unread.
    ``after(unit, buffer, start)``, called in that thread once a unit is read, does work
    on its bytes beside the consumer (the copy's digest); units reach it in order."""
    free: queue.Queue[Buffer] = queue.Queue()
    full: queue.Queue[object] = queue.Queue()
    buffers = [_take_buffer(unit_size) for _ in range(depth + 1)]
    for b in buffers:
        free.put(b)
    stop = threading.Event()
    direct = DirectFiles(disk)

    def run() -> None:
        try:
            for unit in units:
                if isinstance(unit, Marker):
                    if stop.is_set():
                        return
                    full.put(unit)
                    continue
                while True:
                    if stop.is_set():
                        return
                    try:
                        buf = free.get(timeout=0.1)
                        break
                    except queue.Empty:
                        continue
                start = read_unit(disk, direct, unit, buf)
                full.put(Ready(unit, buf, start,
                               None if after is None else after(unit, buf, start)))
            full.put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            full.put(e)

    thread = threading.Thread(target=run, name="vhdmend-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = full.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Marker):
                yield item
                continue
            ready = cast(Ready, item)
            yield ready
            free.put(ready.buffer)
    finally:
        stop.set()
        thread.join()
        direct.close()
        # The thread is gone and the consumer asked for no more: no one holds them now.
        _give_back(buffers)
