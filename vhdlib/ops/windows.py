"""The one-pass copy engine: walk a chain's data window by window, skipping zeros.

The virtual disk is cut into fixed *windows*. For each window the chain's DATA extents are
read in I/O units, all-zero pieces (``PIECE`` bytes, aligned) are skipped, and the rest is
handed to a sink. A CRC-32C digest over ``(offset, bytes)`` of every non-zero piece is
kept per window: computed while writing, and recomputed from a re-read of the output to
verify it. Windows are the checkpoint granularity, so a resumed copy redoes at most the
windows after the last checkpoint and ends bit-identical.

Speed (the output is the same either way): while window ``i`` is copied the kernel is
asked to read window ``i + 1``'s source ranges ahead (``posix_fadvise`` WILLNEED), so
reading the chain overlaps the output's writeback at the checkpoint that follows; units
are read straight from the layer that holds them (the map is already known) into one
reused buffer.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator

from vhdlib.chain import Disk
from vhdlib.checksum import crc32c
from vhdlib.extents import Extent, ExtentKind

WINDOW = 256 << 20
UNIT = 8 << 20
PIECE = 64 << 10
_ZERO_UNIT = bytes(UNIT)
_ZERO_PIECE = bytes(PIECE)

#: ``sink(offset, data)`` receives every non-zero run, in increasing offset order.
Sink = Callable[[int, memoryview], None]


def data_ranges(disk: Disk, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of DATA in ``[start, end)``, layers merged, split into units."""
    for pos, n, _ext in _units(_data_extents(disk, start, end)):
        yield pos, n


def _data_extents(disk: Disk, start: int, end: int) -> list[Extent]:
    return [e for e in disk.extents(start, end - start) if e.kind is ExtentKind.DATA]


def _units(extents: list[Extent]) -> Iterator[tuple[int, int, Extent]]:
    """``(offset, length, extent)``: DATA extents cut into I/O units."""
    for ext in extents:
        pos = ext.offset
        while pos < ext.end:
            # Cut at UNIT boundaries so pieces stay aligned whatever the extent start.
            n = min(ext.end, (pos // UNIT + 1) * UNIT) - pos
            yield pos, n, ext
            pos += n


#: Per source disk, the next window's DATA extents, mapped (and prefetched) ahead.
_ahead: weakref.WeakKeyDictionary[Disk, tuple[int, list[Extent]]] = \
    weakref.WeakKeyDictionary()
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


def _prefetch(disk: Disk, extents: list[Extent]) -> None:
    """Ask the kernel to start reading these extents' file ranges (a hint, no effect on
    what is read)."""
    if _WILLNEED is None:
        return
    ranges: dict[int, list[tuple[int, int]]] = {}
    for e in extents:
        assert e.layer is not None
        ranges.setdefault(e.layer, []).append((e.file_offset, e.length))
    for level, spans in ranges.items():
        try:
            fd = disk.layers[level].fd
        except (AttributeError, OSError):
            continue
        spans.sort()
        lo, hi = spans[0][0], spans[0][0] + spans[0][1]
        for off, n in [*spans[1:], (-1, 0)]:
            if 0 <= off <= hi + (1 << 20):
                hi = max(hi, off + n)
                continue
            try:
                os.posix_fadvise(fd, lo, hi - lo, _WILLNEED)
            except OSError:
                return
            lo, hi = off, off + n


def _window_extents(disk: Disk, index: int) -> list[Extent]:
    """Window ``index``'s DATA extents, from the look-ahead when it was mapped already."""
    ahead = _ahead.pop(disk, None)
    if ahead is not None and ahead[0] == index:
        return ahead[1]
    start = index * WINDOW
    exts = _data_extents(disk, start, min(disk.virtual_size, start + WINDOW))
    _prefetch(disk, exts)
    return exts


def _look_ahead(disk: Disk, index: int) -> None:
    """Map window ``index`` now and start reading it, for the next call."""
    start = index * WINDOW
    if start >= disk.virtual_size:
        return
    exts = _data_extents(disk, start, min(disk.virtual_size, start + WINDOW))
    _prefetch(disk, exts)
    _ahead[disk] = (index, exts)


def data_bytes(disk: Disk) -> int:
    """Bytes of the chain that are DATA in some layer (what a copy reads)."""
    return sum(e.length for e in disk.extents() if e.kind is ExtentKind.DATA)


def _nonzero_runs(buf: bytearray, offset: int,
                  n: int | None = None) -> Iterator[tuple[int, int]]:
    """Runs ``(start, end)`` (indices into ``buf``) of non-zero PIECE-aligned pieces of
    ``buf[:n]`` (default all of it)."""
    if n is None:
        n = len(buf)
    if n == UNIT and len(buf) == UNIT and buf == _ZERO_UNIT:
        return
    run_start = -1
    # Piece boundaries are aligned to absolute disk offsets.
    i = 0
    first = PIECE - offset % PIECE if offset % PIECE else PIECE
    while i < n:
        j = min(n, i + first if i == 0 else i + PIECE)
        # startswith compares in place (a slice would copy the piece first).
        piece_zero = buf.startswith(_ZERO_PIECE if j - i == PIECE else _ZERO_PIECE[:j - i], i)
        if piece_zero:
            if run_start >= 0:
                yield run_start, i
                run_start = -1
        elif run_start < 0:
            run_start = i
        i = j
    if run_start >= 0:
        yield run_start, n


def digest_update(crc: int, offset: int, data: memoryview | bytes | bytearray) -> int:
    """Fold one non-zero run into a window digest."""
    crc = crc32c(offset.to_bytes(8, "little"), crc)
    return crc32c(data, crc)


def process_window(disk: Disk, index: int, sink: Sink | None,
                   buf: bytearray | None = None,
                   read_from: Disk | None = None) -> tuple[int, int, int]:
    """Copy (or, with ``sink=None``, only digest) window ``index`` of ``disk``.

    ``read_from`` reads the bytes from another disk over ``disk``'s DATA ranges: how a
    written output is verified against the digest of its source.
    Returns ``(digest, bytes_read, bytes_written)``.
    """
    crc = 0
    read = written = 0
    buf = buf if buf is not None and len(buf) >= UNIT else bytearray(UNIT)
    bufmv = memoryview(buf)
    if read_from is None:
        extents = _window_extents(disk, index)
        # The next window is mapped and its reading started now: it overlaps this
        # window's writes and the checkpoint's fsync.
        _look_ahead(disk, index + 1)
    else:
        start = index * WINDOW
        extents = _data_extents(disk, start, min(disk.virtual_size, start + WINDOW))
    for off, length, ext in _units(extents):
        if read_from is None:
            # Straight from the layer holding the extent (what Disk.readinto does after
            # mapping the range again).
            assert ext.layer is not None
            disk.layers[ext.layer].pread_into(ext.file_offset + (off - ext.offset),
                                              bufmv[:length])
        else:
            read_from.readinto(off, bufmv[:length])
        read += length
        mv = bufmv
        for a, b in _nonzero_runs(buf, off, length):
            crc = digest_update(crc, off + a, mv[a:b])
            if sink is not None:
                sink(off + a, mv[a:b])
                written += b - a
    return crc, read, written


def window_count(virtual_size: int) -> int:
    return -(-virtual_size // WINDOW)
