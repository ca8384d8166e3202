"""The one-pass copy engine: walk a chain's data window by window, skipping zeros.

The virtual disk is cut into fixed *windows*. For each window the chain's DATA extents are
read in I/O units, all-zero pieces (``PIECE`` bytes, aligned) are skipped, and the rest is
handed to a sink. A CRC-32C digest over ``(offset, bytes)`` of every non-zero piece is
kept per window: computed while writing, and recomputed from a re-read of the output to
verify it. Windows are the checkpoint granularity, so a resumed copy redoes at most the
windows after the last checkpoint and ends bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vhdlib.chain import Disk
from vhdlib.checksum import crc32c
from vhdlib.extents import ExtentKind

WINDOW = 256 << 20
UNIT = 8 << 20
PIECE = 64 << 10
_ZERO_UNIT = bytes(UNIT)
_ZERO_PIECE = bytes(PIECE)

#: ``sink(offset, data)`` receives every non-zero run, in increasing offset order.
Sink = Callable[[int, memoryview], None]


def data_ranges(disk: Disk, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of DATA in ``[start, end)``, layers merged, split into units."""
    for ext in disk.extents(start, end - start):
        if ext.kind is not ExtentKind.DATA:
            continue
        pos = ext.offset
        while pos < ext.end:
            # Cut at UNIT boundaries so pieces stay aligned whatever the extent start.
            n = min(ext.end, (pos // UNIT + 1) * UNIT) - pos
            yield pos, n
            pos += n


def data_bytes(disk: Disk) -> int:
    """Bytes of the chain that are DATA in some layer (what a copy reads)."""
    return sum(e.length for e in disk.extents() if e.kind is ExtentKind.DATA)


def _nonzero_runs(buf: bytearray, offset: int) -> Iterator[tuple[int, int]]:
    """Runs ``(start, end)`` (indices into ``buf``) of non-zero PIECE-aligned pieces."""
    n = len(buf)
    if n == UNIT and buf == _ZERO_UNIT:
        return
    run_start = -1
    # Piece boundaries are aligned to absolute disk offsets.
    i = 0
    first = PIECE - offset % PIECE if offset % PIECE else PIECE
    while i < n:
        j = min(n, i + first if i == 0 else i + PIECE)
        piece_zero = (buf[i:j] == _ZERO_PIECE) if j - i == PIECE else not any(buf[i:j])
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
    reader = read_from if read_from is not None else disk
    start = index * WINDOW
    end = min(disk.virtual_size, start + WINDOW)
    crc = 0
    read = written = 0
    buf = buf if buf is not None else bytearray(UNIT)
    for off, length in data_ranges(disk, start, end):
        chunk = buf if length == len(buf) else bytearray(length)
        reader.readinto(off, chunk)
        read += length
        mv = memoryview(chunk)
        for a, b in _nonzero_runs(chunk, off):
            crc = digest_update(crc, off + a, mv[a:b])
            if sink is not None:
                sink(off + a, mv[a:b])
                written += b - a
    return crc, read, written


def window_count(virtual_size: int) -> int:
    return -(-virtual_size // WINDOW)
