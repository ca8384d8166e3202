"""The one-pass copy engine: walk a chain's data window by window, skipping zeros.

The virtual disk is cut into fixed *windows*. For each window the chain's DATA extents are
read in I/O units, all-zero pieces (``PIECE`` bytes, aligned) are skipped, and the rest is
handed to a sink. A CRC-32C digest over ``(offset, bytes)`` of every non-zero piece is
kept per window: computed while writing, and recomputed from a re-read of the output to
verify it (the re-read also reads whatever the output stores where the source has no
data: it must read zeros there). Windows are the checkpoint granularity, so a resumed copy
redoes at most the windows after the last checkpoint and ends bit-identical.

Speed (the output is the same either way): a copy's units are planned and read ahead in
one second thread (:class:`CopyStream`, O_DIRECT where possible) across windows and
across the checkpoints between chunks, so the device keeps reading while the output is
written and fsynced; that thread also finds each unit's non-zero runs and folds them into
the window's digest, so the writing thread only writes. Units are read straight from the
layer that holds them (the map is already known); PIECE-aligned parts of a source extent
that lie in a hole of its file (sparse files: a merged VHDX block is mostly holes) are not
read at all, as they are zero pieces. The verify re-read of an output is its bytes' last
use, so their cached pages are freed as soon as they are read
(:func:`vhdlib.fileio.forget`): a copy's page cache stays a few chunks deep, and its
writes reuse the pages just freed.
"""

from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, cast

from vhdlib import fileio
from vhdlib.chain import Disk
from vhdlib.checksum import crc32c
from vhdlib.errors import InternalError
from vhdlib.extents import Extent, ExtentKind
from vhdlib.layer import Layer
from vhdlib.ops import readahead

WINDOW = 256 << 20
UNIT = 8 << 20
PIECE = 64 << 10
_ZERO_UNIT = bytes(UNIT)
_ZERO_PIECE = bytes(PIECE)

#: ``sink(offset, data)`` receives every non-zero run, in increasing offset order.
Sink = Callable[[int, memoryview], None]
#: Sorted, disjoint ``[start, end)`` byte ranges a copy leaves out (file-system reclaim).
DropRanges = Sequence[list[int]]


def _data_extents(disk: Disk, start: int, end: int) -> list[Extent]:
    return [e for e in disk.extents(start, end - start) if e.kind is ExtentKind.DATA]


def _units(extents: list[Extent]) -> Iterator[tuple[int, int, Extent]]:
    """``(offset, length, extent)``: DATA extents cut into I/O units."""
    for ext in extents:
        for pos, n in _cut(ext.offset, ext.end):
            yield pos, n, ext


def _cut(start: int, end: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` cut at UNIT boundaries (so pieces stay aligned whatever the
    start)."""
    pos = start
    while pos < end:
        n = min(end, (pos // UNIT + 1) * UNIT) - pos
        yield pos, n
        pos += n


#: One read of the copy: ``(virtual offset, length, layer index, file offset)``.
Read = tuple[int, int, int, int]
#: A window's plan: its reads (holes left out) and the DATA bytes it covers.
WindowPlan = tuple[list[Read], int]

_SEEK_DATA = getattr(os, "SEEK_DATA", None)
_SEEK_HOLE = getattr(os, "SEEK_HOLE", None)


def _prefetch(disk: Disk, reads: list[Read]) -> None:
    """Ask the kernel to start reading these file ranges (a hint, no effect on what is
    read)."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    for _off, n, level, fo in reads:
        ranges.setdefault(level, []).append((fo, n))
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
            fileio.will_need(fd, lo, hi - lo)
            lo, hi = off, off + n


def _reads_holes(layer: Layer) -> bool:
    """True when a hole in ``layer``'s file reads as zeros through ``pread_into``."""
    if _SEEK_DATA is None or _SEEK_HOLE is None:
        return False
    # An in-memory overlay (a read-only open of a dirty VHDX log) may put bytes where the
    # file has a hole: then read everything.
    return layer.reads_file_bytes


def _file_holes(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """Holes of the file in ``[start, end)`` (``end`` within the file); [] if unknown."""
    assert _SEEK_DATA is not None and _SEEK_HOLE is not None
    holes: list[tuple[int, int]] = []
    pos = start
    try:
        while pos < end:
            try:
                data = os.lseek(fd, pos, _SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                data = end  # no data from pos to the end of the file
            if data > pos:
                holes.append((pos, min(data, end)))
            if data >= end:
                break
            pos = os.lseek(fd, data, _SEEK_HOLE)
    except OSError:
        return []
    return holes


def _plan_window(disk: Disk, index: int) -> WindowPlan:
    """Window ``index``'s reads: its DATA extents less the PIECE-aligned parts that lie in
    holes of their files (those read as zeros, so they are skipped as zero pieces would
    be: the same runs reach the sink and the digest)."""
    start = index * WINDOW
    exts = _data_extents(disk, start, min(disk.virtual_size, start + WINDOW))
    reads: list[Read] = []
    covered = 0
    sizes: dict[int, int | None] = {}
    for ext in exts:
        assert ext.layer is not None
        covered += ext.length
        level = ext.layer
        if level not in sizes:
            layer = disk.layers[level]
            sizes[level] = os.fstat(layer.fd).st_size if _reads_holes(layer) else None
        size = sizes[level]
        skips: list[tuple[int, int]] = []
        if size is not None:
            fo = ext.file_offset
            # Past the end of the file is no hole: reading it reports the truncation.
            for hs, he in _file_holes(disk.layers[level].fd, fo, min(ext.end - ext.offset
                                                                   + fo, size)):
                lo = -(-(ext.offset + hs - fo) // PIECE) * PIECE
                hi = (ext.offset + he - fo) // PIECE * PIECE
                if hi > lo:
                    skips.append((lo, hi))
        pos = ext.offset
        for lo, hi in [*skips, (ext.end, ext.end)]:
            if lo > pos:
                reads.append((pos, lo - pos, level, ext.file_offset + pos - ext.offset))
            pos = max(pos, hi)
    return reads, covered


def _nonzero_runs(buf: bytearray, offset: int, n: int | None = None,
                  base: int = 0) -> Iterator[tuple[int, int]]:
    """Runs ``(start, end)`` (relative to ``base``) of non-zero PIECE-aligned pieces of
    ``buf[base:base + n]`` (default all of ``buf``); ``offset`` is the disk offset of
    ``buf[base]``."""
    if n is None:
        n = len(buf) - base
    if n == UNIT and buf.startswith(_ZERO_UNIT, base):
        return
    run_start = -1
    # Piece boundaries are aligned to absolute disk offsets.
    i = 0
    first = PIECE - offset % PIECE if offset % PIECE else PIECE
    while i < n:
        j = min(n, i + first if i == 0 else i + PIECE)
        # startswith compares in place (a slice would copy the piece first).
        piece_zero = buf.startswith(_ZERO_PIECE if j - i == PIECE else _ZERO_PIECE[:j - i],
                                    base + i)
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


def _kept(start: int, end: int, drop: DropRanges | None) -> Iterator[tuple[int, int]]:
    """``[start, end)`` less the ``drop`` ranges (sorted, disjoint, PIECE-aligned)."""
    if not drop:
        yield start, end
        return
    i = max(0, bisect.bisect_right(drop, [start, 1 << 62]) - 1)
    pos = start
    while i < len(drop) and drop[i][0] < end:
        lo, hi = drop[i]
        if hi > pos:
            if lo > pos:
                yield pos, lo
            pos = max(pos, hi)
        i += 1
    if pos < end:
        yield pos, end


class WindowResult(NamedTuple):
    """What :func:`process_window` did with one window."""

    #: The window's digest (CRC-32C over ``(offset, bytes)`` of its non-zero runs).
    digest: int
    #: DATA bytes of the source's map the window covers (progress and journal figures).
    read: int
    #: Bytes handed to the sink.
    written: int
    #: Bytes actually read from files (less than ``read`` where blocks are dropped,
    #: holes skipped or, when verifying, the output stores nothing): the I/O a chunk spends.
    io: int


class CopyStream:
    """The source units of windows ``first``, ``first + 1``, ... for a copy, planned and
    read ahead in one second thread across window boundaries (and across the checkpoints
    between a run's chunks): the device keeps reading while this thread writes and
    fsyncs, instead of draining the pipeline at every window. The read-ahead thread also
    digests each unit (:meth:`_digest`), so the writing thread only writes.

    Only the read-ahead thread touches ``disk`` (plans and reads), so the layers' caches
    stay single-threaded. Windows must be asked for in order from ``first``; reading ahead
    past where a chunk stops costs a little I/O, never a byte of the output.
    """

    def __init__(self, disk: Disk, first: int, drop: DropRanges | None,
                 stop: int | None = None) -> None:
        self.disk = disk
        #: The window :meth:`window` gives next.
        self.next = first
        total = window_count(disk.virtual_size)
        stop = total if stop is None else min(stop, total)
        #: The running digest of the window being read (read-ahead thread only).
        self._crc = 0
        self._items = readahead.read_ahead(disk, self._units(first, stop, drop), UNIT,
                                           after=self._digest)
        self._peeked: readahead.Ready | readahead.Marker | None = None

    def _units(self, first: int, stop: int, drop: DropRanges | None
               ) -> Iterator[Read | readahead.Marker]:
        for index in range(first, stop):
            reads, covered = _plan_window(self.disk, index)
            if drop:
                reads = _less_drop(reads, drop)
            if not readahead.ENABLED:
                # Reads go through the page cache: let the kernel read the window ahead
                # (what is kept only: a dropped stale block is never read).
                _prefetch(self.disk, reads)
            # Every unit of the window before is digested: the next window starts at 0.
            self._crc = 0
            yield readahead.Marker((index, covered))
            yield from _read_units(reads)

    def _digest(self, unit: Read, rbuf: readahead.Buffer, base: int) -> UnitRuns:
        """In the read-ahead thread, beside the writes: a unit's non-zero runs, folded into
        the window's digest in order (CRC-32C releases the GIL)."""
        off, length = unit[0], unit[1]
        data = rbuf.data
        runs = list(_nonzero_runs(data, off, length, base))
        if runs:
            crc = self._crc
            mv = memoryview(data)
            try:
                for run_a, run_b in runs:
                    crc = digest_update(crc, off + run_a, mv[base + run_a:base + run_b])
            finally:
                mv.release()
            self._crc = crc
        return UnitRuns(runs, self._crc)

    def _take(self) -> readahead.Ready | readahead.Marker | None:
        item, self._peeked = self._peeked, None
        if item is None:
            item = next(self._items, None)
        return item

    def window(self, index: int) -> tuple[int, Iterator[readahead.Ready]]:
        """``(DATA bytes covered, the window's units with their buffers)``; each buffer is
        valid until the next unit is asked for."""
        marker = self._take()
        at = cast(tuple[int, int], marker.value) if isinstance(marker, readahead.Marker) \
            else None
        if at is None or at[0] != index:
            raise InternalError(f"copy stream out of order: window {index} asked, "
                                f"{self.next} expected")
        self.next = index + 1
        return at[1], self._window_units()

    def _window_units(self) -> Iterator[readahead.Ready]:
        while True:
            item = self._take()
            if item is None:
                return
            if isinstance(item, readahead.Marker):
                self._peeked = item
                return
            yield item

    def close(self) -> None:
        """Stop the read-ahead thread (idempotent)."""
        self._items.close()


def _less_drop(reads: list[Read], drop: DropRanges) -> list[Read]:
    """``reads`` less the dropped byte ranges: those are neither written nor digested,
    so not read either."""
    return [(a, b - a, level, fo + a - off) for off, length, level, fo in reads
            for a, b in _kept(off, off + length, drop)]


def _read_units(reads: list[Read]) -> Iterator[Read]:
    """A window's reads cut into I/O units."""
    return ((pos, n, level, fo + pos - off) for off, length, level, fo in reads
            for pos, n in _cut(off, off + length))


class UnitRuns(NamedTuple):
    """A unit's non-zero runs (relative to its offset) and the window's digest after it."""

    runs: list[tuple[int, int]]
    crc: int


def _digest_units(items: Iterable[readahead.Ready], sink: Sink | None
                  ) -> tuple[int, int, int]:
    """Hand the non-zero runs of read units to ``sink``: ``(crc, written, io)``. The runs
    and the digest come with each unit (:meth:`CopyStream._digest`); the units already
    leave the dropped ranges out (:func:`_less_drop`)."""
    crc = written = io = 0
    for ready in items:
        off, length = ready.unit[0], ready.unit[1]
        io += length
        runs, crc = cast(UnitRuns, ready.extra)
        if sink is None or not runs:
            continue
        base = ready.start
        mv = memoryview(ready.buffer.data)
        try:
            for run_a, run_b in runs:
                piece = mv[base + run_a:base + run_b]
                sink(off + run_a, piece)
                written += run_b - run_a
                piece.release()
        finally:
            mv.release()
    return crc, written, io


def process_window(disk: Disk, index: int, sink: Sink | None,
                   buf: bytearray | None = None,
                   read_from: Disk | None = None,
                   drop: DropRanges | None = None,
                   stream: CopyStream | None = None) -> WindowResult:
    """Copy (or, with ``sink=None``, only digest) window ``index`` of ``disk``.

    ``read_from`` reads the bytes from another disk over ``disk``'s DATA ranges: how a
    written output is verified against the digest of its source (the cached pages of what
    it reads are freed once read). What ``read_from`` stores outside those ranges is read
    too, and any non-zero byte there changes the digest: the source reads zeros there.
    ``drop`` (copy only) lists byte ranges to leave out as if they were zeros: neither
    written nor digested, so verification requires the output to read zeros there.
    ``stream`` (copy only) supplies the window's units, read ahead across windows, less
    the ``drop`` it was made with; without it the window is read on its own, less ``drop``.
    """
    if read_from is None:
        own = stream is None
        if stream is None:
            stream = CopyStream(disk, index, drop, stop=index + 1)
        try:
            read, items = stream.window(index)
            crc, written, io = _digest_units(items, sink)
        finally:
            if own:
                stream.close()
        return WindowResult(crc, read, written, io)
    crc = read = written = io = 0
    buf = buf if buf is not None and len(buf) >= UNIT else bytearray(UNIT)
    bufmv = memoryview(buf)
    start = index * WINDOW
    extents = _data_extents(disk, start, min(disk.virtual_size, start + WINDOW))
    for off, length, _ext in _units(extents):
        read += length
        for lo, hi in _stored_regions(read_from, off, length, bufmv):
            io += hi - lo
            for a, b in _nonzero_runs(buf, lo, hi - lo, lo - off):
                crc = digest_update(crc, lo + a, bufmv[lo - off + a:lo - off + b])
    # Where the source reads zeros (no DATA: a hole of the source, or a block the copy
    # dropped there) the output must too: a non-zero byte it stores there is folded in,
    # so the digest cannot match (the runs above only cover the source's DATA).
    end = min(disk.virtual_size, start + WINDOW)
    for pos, n in _stray_bytes(read_from, start, end, extents, bufmv):
        io += n
        if not buf.startswith(memoryview(_ZERO_UNIT)[:n]):
            crc = digest_update(crc, pos, bufmv[:n])
    return WindowResult(crc, read, written, io)


def _stray_bytes(out: Disk, start: int, end: int, source: list[Extent],
                 bufmv: memoryview) -> Iterator[tuple[int, int]]:
    """What ``out`` stores in ``[start, end)`` outside the ``source`` DATA extents, read
    into ``bufmv`` a unit at a time: ``(disk offset, n)`` for ``bufmv[:n]``, valid until
    the next.
    Holes of the output's files are skipped (they read zeros): a fixed output's
    preallocated, never-written space costs a seek, not a read."""
    covered = [(e.offset, e.end) for e in source]
    for ext in out.extents(start, end - start):
        if ext.kind is not ExtentKind.DATA:
            continue
        assert ext.layer is not None and ext.file_offset is not None
        layer = out.layers[ext.layer]
        shift = ext.file_offset - ext.offset
        size = os.fstat(layer.fd).st_size if _reads_holes(layer) else None
        for lo, hi in _less(ext.offset, ext.end, covered):
            parts = [(lo, hi)]
            if size is not None and lo + shift < size:
                holes = [(a - shift, b - shift)
                         for a, b in _file_holes(layer.fd, lo + shift, min(hi + shift, size))]
                parts = _less(lo, hi, holes)
            for a, b in parts:
                for pos, n in _cut(a, b):
                    layer.pread_into(pos + shift, bufmv[:n])
                    fileio.forget(layer.fd, pos + shift, n)
                    yield pos, n


def _less(start: int, end: int, cut: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` less the sorted ``(lo, hi)`` ranges of ``cut``."""
    out: list[tuple[int, int]] = []
    pos = start
    for i in range(max(0, bisect.bisect_right(cut, (start, 1 << 62)) - 1), len(cut)):
        lo, hi = cut[i]
        if hi <= pos:
            continue
        if lo >= end:
            break
        if lo > pos:
            out.append((pos, lo))
        pos = max(pos, hi)
    if pos < end:
        out.append((pos, end))
    return out


def _stored_regions(disk: Disk, off: int, length: int,
                    bufmv: memoryview) -> Iterator[tuple[int, int]]:
    """Fill the parts of ``bufmv[:length]`` (disk bytes at ``off``) that can hold a
    non-zero piece and yield them as ``(start, end)`` disk ranges, in order.

    What ``disk.readinto`` would give, without reading or scanning what no layer stores
    (a dropped or unallocated block of the output reads as zeros): the DATA extents,
    widened to whole PIECEs (the widening zero-filled), merged where they touch. Every
    piece outside them is a zero piece, so the runs and digest come out the same as over
    the whole unit (the pieces keep their absolute alignment; a gap between two regions
    holds at least one whole zero piece, which ends a run there either way).
    """
    end = off + length
    zero = memoryview(_ZERO_UNIT)
    regions: list[list[int]] = []
    data: list[tuple[int, int, int, int]] = []
    for ext in disk.extents(off, length):
        if ext.kind is not ExtentKind.DATA:
            continue
        assert ext.layer is not None
        data.append((ext.offset, ext.end, ext.layer, ext.file_offset))
        lo = max(off, ext.offset // PIECE * PIECE)
        hi = min(end, -(-ext.end // PIECE) * PIECE)
        if regions and regions[-1][1] >= lo:
            regions[-1][1] = max(regions[-1][1], hi)
        else:
            regions.append([lo, hi])
    if not regions:
        return
    i = 0
    for lo, hi in regions:
        pos = lo
        while pos < hi:
            if i < len(data) and data[i][0] <= pos:
                d_start, d_end, level, fo = data[i]
                stop = min(d_end, hi)
                layer = disk.layers[level]
                layer.pread_into(fo + pos - d_start, bufmv[pos - off:stop - off])
                # This re-read of an output is its bytes' last use: free their pages.
                fileio.forget(layer.fd, fo + pos - d_start, stop - pos)
                pos = stop
                if stop == d_end:
                    i += 1
            else:
                stop = min(hi, data[i][0]) if i < len(data) else hi
                bufmv[pos - off:stop - off] = zero[:stop - pos]
                pos = stop
        yield lo, hi


def window_count(virtual_size: int) -> int:
    return -(-virtual_size // WINDOW)
