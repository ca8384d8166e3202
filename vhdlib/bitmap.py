"""Sector bitmaps: runs of present / absent sectors.

VHD bitmaps are MSB-first (bit 7 of byte 0 is sector 0; VHD spec, "Block Bitmap"); VHDX
sector bitmaps are LSB-first (MS-VHDX 2.5.1.2). Runs may start and end mid-byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_RUNS = re.compile(rb"\x00+|\xff+|[^\x00\xff]")
# Reverses the bit order of each byte: turns an LSB-first bitmap into an MSB-first one.
_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _msb_runs(bitmap: bytes) -> Iterator[tuple[int, int, bool]]:
    """Unclipped (start_bit, length, value) runs of an MSB-first bitmap, coalesced."""
    cur_start = 0
    cur_val: bool | None = None
    cur_len = 0
    for m in _RUNS.finditer(bitmap):
        chunk = m.group()
        first = chunk[0]
        if first in (0, 0xFF):
            pieces: list[tuple[bool, int]] = [(first == 0xFF, len(chunk) * 8)]
        else:
            pieces = []
            for bit in range(7, -1, -1):
                v = bool((first >> bit) & 1)
                if pieces and pieces[-1][0] == v:
                    pieces[-1] = (v, pieces[-1][1] + 1)
                else:
                    pieces.append((v, 1))
        for v, n in pieces:
            if cur_val is v:
                cur_len += n
            else:
                if cur_val is not None:
                    yield cur_start, cur_len, cur_val
                cur_start += cur_len
                cur_val, cur_len = v, n
    if cur_val is not None:
        yield cur_start, cur_len, cur_val


def runs(bitmap: bytes | bytearray | memoryview, first: int, count: int, *,
         msb_first: bool) -> Iterator[tuple[int, int, bool]]:
    """Runs ``(start, length, present)`` of bits ``[first, first+count)``, in order.

    Bits past the end of ``bitmap`` read as absent.
    """
    data = bytes(bitmap)
    if not msb_first:
        data = data.translate(_REVERSE)
    end = first + count
    # Only the bytes that hold the requested bits.
    lo_byte = first // 8
    hi_byte = min(len(data), -(-end // 8))
    base = lo_byte * 8
    pos = first
    pending: tuple[int, int, bool] | None = None
    if lo_byte < hi_byte:
        for start, length, value in _msb_runs(data[lo_byte:hi_byte]):
            s = max(base + start, first)
            e = min(base + start + length, end)
            if e > s:
                if pending is not None:
                    yield pending
                pending = (s, e - s, value)
                pos = e
    if pos < end:
        # Bits past the bitmap's end are absent; extend a trailing absent run.
        if pending is not None and not pending[2]:
            pending = (pending[0], end - pending[0], False)
        else:
            if pending is not None:
                yield pending
            pending = (pos, end - pos, False)
    if pending is not None:
        yield pending


def set_bits(bitmap: bytearray, first: int, count: int, *, msb_first: bool) -> None:
    """Set bits ``[first, first+count)`` to 1 in place."""
    end = first + count
    pos = first
    while pos < end:
        if pos % 8 == 0 and end - pos >= 8:
            nbytes = (end - pos) // 8
            bitmap[pos // 8: pos // 8 + nbytes] = b"\xff" * nbytes
            pos += nbytes * 8
            continue
        bit = pos % 8
        mask = (0x80 >> bit) if msb_first else (1 << bit)
        bitmap[pos // 8] |= mask
        pos += 1
