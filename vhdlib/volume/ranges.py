"""Free byte ranges: from allocation bitmaps, merged, and turned into whole droppable blocks.

Bitmaps of both NTFS (``$Bitmap``) and ext2/3/4 (block bitmaps) number their bits from the
least significant bit of byte 0 (libfsntfs "Bitmap"; kernel ext4 "Block and inode Bitmaps").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from vhdlib.errors import UsageError

#: A half-open byte range ``(start, end)``.
Range = tuple[int, int]

_NOT_FULL = re.compile(rb"[^\xff]+")


def clear_runs(bitmap: bytes, nbits: int) -> Iterator[tuple[int, int]]:
    """``(first_bit, count)`` of each maximal run of clear bits among the first ``nbits``."""
    nbits = min(nbits, len(bitmap) * 8)
    run_start = -1
    run_end = -1
    for match in _NOT_FULL.finditer(bitmap, 0, (nbits + 7) // 8):
        lo, hi = match.span()
        pos = lo * 8
        for i in range(lo, hi):
            byte = bitmap[i]
            if byte == 0:
                if run_end != pos:
                    if run_start >= 0:
                        yield run_start, run_end - run_start
                    run_start = pos
                run_end = pos + 8
            else:
                for bit in range(8):
                    if not byte >> bit & 1:
                        if run_end != pos + bit:
                            if run_start >= 0:
                                yield run_start, run_end - run_start
                            run_start = pos + bit
                        run_end = pos + bit + 1
            pos += 8
    if run_start >= 0:
        # The last byte may hold bits past nbits; they are never reported free.
        run_end = min(run_end, nbits)
        if run_end > run_start:
            yield run_start, run_end - run_start


def first_clear(bitmap: bytes, first: int, count: int) -> int | None:
    """The first clear bit among bits ``[first, first + count)`` of ``bitmap`` (bits past
    its end read as clear), or None when all are set. The bits are tested as one integer:
    a file of gigabytes spans millions of them."""
    if count <= 0:
        return None
    inside = min(first + count, len(bitmap) * 8) - first
    if inside > 0:
        bits = int.from_bytes(bitmap[first >> 3:(first + inside + 7) >> 3], "little")
        missing = ~(bits >> (first & 7)) & ((1 << inside) - 1)
        if missing:
            return first + (missing & -missing).bit_length() - 1
    return None if inside >= count else max(first, len(bitmap) * 8)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping, non-adjacent ranges covering the same bytes."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def subtract(ranges: list[Range], holes: Iterable[Range]) -> list[Range]:
    """``ranges`` (merged) minus every byte of ``holes``."""
    result = list(ranges)
    for h_start, h_end in merge(holes):
        nxt: list[Range] = []
        for start, end in result:
            if h_end <= start or h_start >= end:
                nxt.append((start, end))
                continue
            if start < h_start:
                nxt.append((start, h_start))
            if h_end < end:
                nxt.append((h_end, end))
        result = nxt
    return result


def whole_blocks(ranges: Iterable[Range], block_size: int) -> Iterator[int]:
    """Index of each block of ``block_size`` bytes that lies wholly inside one of ``ranges``
    (merged first, so a block spanning two adjacent ranges counts)."""
    if block_size <= 0:
        raise UsageError(f"block size must be positive, not {block_size}")
    for start, end in merge(ranges):
        first = -(-start // block_size)
        last = end // block_size  # exclusive
        yield from range(first, last)
