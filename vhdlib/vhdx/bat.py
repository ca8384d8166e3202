"""The VHDX Block Allocation Table and sector bitmaps (MS-VHDX 2.5).

The BAT interleaves payload-block entries with one sector-bitmap entry after every chunk
of ``chunk_ratio`` blocks. Changes are kept in memory as dirty 4 KiB pages (of the BAT and
of the bitmaps) and reach the file only through the log (:meth:`VhdxLayer.flush`).
"""

from __future__ import annotations

import array
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import overload

from vhdlib import bitmap as bm
from vhdlib.errors import ImageError
from vhdlib.extents import Segment, SegmentState
from vhdlib.vhdx import structs as S

MiB = S.MiB
PAGE = 4096
#: Sector-bitmap slices cached per layer (LRU).
BITMAP_CACHE = 256
#: States whose entry points at a payload block in the file.
ALLOCATED = (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT)
#: States that read as zeros whatever the disk type (2.5.1.1).
READS_ZERO = (S.PAYLOAD_BLOCK_ZERO, S.PAYLOAD_BLOCK_UNMAPPED, S.PAYLOAD_BLOCK_UNMAPPED_V095)
#: States that define no sector: the parent's data, or zeros without a parent.
UNDEFINED = (S.PAYLOAD_BLOCK_NOT_PRESENT, S.PAYLOAD_BLOCK_UNDEFINED)

Reader = Callable[[int, int], bytes]  # (offset, length) -> bytes

_LOW3 = bytes(i & 7 for i in range(256))
_WITH_OFFSET = re.compile(b"[\x06\x07]")


class VhdxBat:
    """BAT entries (8 bytes each, 2.5.1) with the geometry of the interleaved layout."""

    def __init__(self, entries: array.array, *, block_size: int, virtual_size: int,
                 chunk_ratio: int, path: str) -> None:
        self.entries = entries
        self.count = len(entries)
        self.block_size = block_size
        self.chunk_ratio = chunk_ratio
        self.data_blocks = -(-virtual_size // block_size)
        self.path = path
        #: Indexes of the 4 KiB BAT pages changed since the last commit.
        self.dirty_pages: set[int] = set()

    @classmethod
    def parse(cls, raw: bytes, **kw: int | str) -> VhdxBat:
        """From the little-endian bytes of the BAT region."""
        entries = array.array("Q")
        entries.frombytes(raw)
        if sys.byteorder == "big":  # pragma: no cover
            entries.byteswap()
        return cls(entries, **kw)  # type: ignore[arg-type]

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> array.array: ...

    def __getitem__(self, index: int | slice) -> int | array.array:
        return self.entries[index]

    def __len__(self) -> int:
        return self.count

    # --- geometry --------------------------------------------------------------------

    def index(self, block: int) -> int:
        """Payload block ``block``'s BAT index: a bitmap entry follows every chunk (2.5)."""
        return block + block // self.chunk_ratio

    def bitmap_index(self, chunk: int) -> int:
        return chunk * (self.chunk_ratio + 1) + self.chunk_ratio

    def bitmap_count(self) -> int:
        """Sector-bitmap entries present in this BAT layout."""
        return self.count // (self.chunk_ratio + 1)

    def payload_state(self, block: int) -> int:
        return S.bat_state(self.entries[self.index(block)])

    def payload_offset(self, block: int) -> int | None:
        """File offset of ``block``'s payload, ``None`` when it has none in the file."""
        ent = self.entries[self.index(block)]
        return S.bat_offset(ent) if S.bat_state(ent) in ALLOCATED else None

    def bitmap_block(self, chunk: int) -> int | None:
        """File offset of chunk ``chunk``'s sector-bitmap block, ``None`` when absent."""
        ent = self.entries[self.bitmap_index(chunk)]
        return S.bat_offset(ent) if S.bat_state(ent) == S.SB_BLOCK_PRESENT else None

    def bitmap_ranges(self) -> list[tuple[int, int]]:
        """``[start, end)`` of every present sector-bitmap block."""
        out = []
        for c in range(self.bitmap_count()):
            off = self.bitmap_block(c)
            if off is not None:
                out.append((off, off + MiB))
        return out

    def states(self) -> bytes:
        """Each entry's state (its low 3 bits, 2.5.1), one byte per entry."""
        if sys.byteorder == "little":
            return self.entries.tobytes()[::8].translate(_LOW3)
        return bytes(S.bat_state(e) for e in self.entries)  # pragma: no cover

    def slots_end(self) -> int:
        """End of the last payload or bitmap block the BAT references (0 when none)."""
        end = 0
        stride = self.chunk_ratio + 1
        bitmaps_end = self.bitmap_count() * stride
        # Only entries whose state carries a file offset (6, 7), found at C speed: a BAT
        # is mostly unallocated and can hold millions of entries.
        for m in _WITH_OFFSET.finditer(self.states()):
            i = m.start()
            ent = self.entries[i]
            if i % stride == self.chunk_ratio:  # a sector-bitmap entry
                if S.bat_state(ent) == S.SB_BLOCK_PRESENT and i < bitmaps_end:
                    end = max(end, S.bat_offset(ent) + MiB)
            elif i - i // stride < self.data_blocks:
                end = max(end, S.bat_offset(ent) + self.block_size)
        return end

    def unallocated(self) -> int:
        """Payload blocks without a slot in the file (only FULLY/PARTIALLY_PRESENT have one;
        a present sector-bitmap entry is also state 6, so those are taken out)."""
        states = self.states()
        with_slot = (states.count(S.PAYLOAD_BLOCK_FULLY_PRESENT)
                     + states.count(S.PAYLOAD_BLOCK_PARTIALLY_PRESENT)
                     - self.bitmap_states().count(S.SB_BLOCK_PRESENT))
        return self.data_blocks - with_slot

    def bitmap_states(self) -> bytes:
        """The states of the sector-bitmap entries, one byte per chunk."""
        return self.states()[self.chunk_ratio:self.bitmap_count() * (self.chunk_ratio + 1):
                             self.chunk_ratio + 1]

    def state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for i in range(self.data_blocks):
            st = self.payload_state(i)
            name = S.PAYLOAD_STATE_NAMES.get(st, f"reserved_{st}")
            counts[name] = counts.get(name, 0) + 1
        return counts

    # --- changes -----------------------------------------------------------------------

    def set(self, index: int, value: int) -> None:
        """Change entry ``index`` in memory (committed through the log later)."""
        self.entries[index] = value
        self.dirty_pages.add((index * 8) // PAGE)

    def little_endian(self) -> bytes:
        if sys.byteorder == "little":
            return self.entries.tobytes()
        b = array.array("Q", self.entries)  # pragma: no cover - big-endian hosts only
        b.byteswap()  # pragma: no cover
        return b.tobytes()  # pragma: no cover

    def dirty_sectors(self, region_offset: int, read: Reader) -> list[tuple[int, bytes]]:
        """The dirty BAT pages as ``(file offset, 4 KiB)``, for a log entry."""
        raw = self.little_endian()
        out = []
        for page in sorted(self.dirty_pages):
            chunk = raw[page * PAGE:(page + 1) * PAGE]
            if len(chunk) < PAGE:
                # The last BAT page extends past the entries: keep what the file holds there.
                tail = read(region_offset + page * PAGE + len(chunk), PAGE - len(chunk))
                chunk = chunk + tail
            out.append((region_offset + page * PAGE, chunk))
        return out


class SectorBitmaps:
    """Sector bitmaps of a differencing VHDX (2.5.1.2): LSB-first bits, one 1 MiB block per
    chunk; an LRU cache of per-block slices and dirty pages awaiting the log."""

    def __init__(self, bat: VhdxBat, sector_size: int, read: Reader) -> None:
        self.bat = bat
        self.sector_size = sector_size
        self.per_block = bat.block_size // sector_size // 8
        self._read = read
        #: Dirty bitmap pages, by file offset.
        self.dirty_pages: dict[int, bytearray] = {}
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def location(self, block: int) -> tuple[int, int] | None:
        """(file offset of block's slice of its chunk's sector bitmap, slice length)."""
        ratio = self.bat.chunk_ratio
        off = self.bat.bitmap_block(block // ratio)
        if off is None:
            return None
        return off + (block % ratio) * self.per_block, self.per_block

    def bits(self, block: int) -> bytes:
        """The LSB-first sector bitmap bits of ``block`` (2.5.1.2), LRU-cached."""
        cached = self._cache.get(block)
        if cached is not None:
            self._cache.move_to_end(block)
            return cached
        loc = self.location(block)
        if loc is None:
            # 2.5 / 2.5.1.1: a PARTIALLY_PRESENT block's chunk must have a present sector
            # bitmap; without one the image is corrupt (reading the parent would be a guess).
            raise ImageError(f"block {block} is PARTIALLY_PRESENT but the sector bitmap of "
                             f"chunk {block // self.bat.chunk_ratio} is not present "
                             "(MS-VHDX 2.5)", path=self.bat.path)
        data = self.read(*loc)
        self._cache[block] = data
        if len(self._cache) > BITMAP_CACHE:
            self._cache.popitem(last=False)
        return data

    def read(self, offset: int, length: int) -> bytes:
        """Read through the overlay and our dirty (uncommitted) pages."""
        buf = bytearray(self._read(offset, length))
        if self.dirty_pages:
            first = offset - offset % PAGE
            for page in range(first, offset + length, PAGE):
                data = self.dirty_pages.get(page)
                if data is None:
                    continue
                s, e = max(page, offset), min(page + PAGE, offset + length)
                buf[s - offset:e - offset] = data[s - page:e - page]
        return bytes(buf)

    def set_present(self, block: int, lo: int, hi: int, new_block: Callable[[], int]) -> None:
        """Set the bits of in-block bytes ``[lo, hi)``; ``new_block`` gives a zeroed 1 MiB
        block when the chunk has no bitmap yet."""
        sector = self.sector_size
        chunk = block // self.bat.chunk_ratio
        if self.bat.bitmap_block(chunk) is None:
            self.bat.set(self.bat.bitmap_index(chunk),
                         S.bat_entry(S.SB_BLOCK_PRESENT, new_block()))
        loc = self.location(block)
        assert loc is not None
        slice_off, _ = loc
        # Bits are LSB-first; the block's slice starts on a byte boundary.
        bit_lo = lo // sector
        bit_hi = bit_lo + (hi - lo) // sector
        page_lo = (slice_off + bit_lo // 8) - (slice_off + bit_lo // 8) % PAGE
        page_hi = slice_off + -(-bit_hi // 8)
        for page in range(page_lo, page_hi, PAGE):
            buf = self.dirty_pages.get(page)
            if buf is None:
                buf = bytearray(self._read(page, PAGE))
                self.dirty_pages[page] = buf
            # Bits of this page: byte range [page, page+4096) of the file.
            b0 = max(bit_lo, (page - slice_off) * 8)
            b1 = min(bit_hi, (page + PAGE - slice_off) * 8)
            if b1 > b0:
                bm.set_bits(buf, b0 - (page - slice_off) * 8, b1 - b0, msb_first=False)
        self._cache.pop(block, None)

    def dirty_sectors(self) -> list[tuple[int, bytes]]:
        return [(off, bytes(self.dirty_pages[off])) for off in sorted(self.dirty_pages)]

    def segments(self, block: int, lo: int, hi: int) -> Iterator[Segment]:
        """Segments of PARTIALLY_PRESENT ``block`` for in-block ``[lo, hi)``."""
        sector = self.sector_size
        base = block * self.bat.block_size
        off0 = self.bat.payload_offset(block)
        assert off0 is not None
        for start, n, present in bm.runs(self.bits(block), lo // sector, (hi - lo) // sector,
                                         msb_first=False):
            off = start * sector
            if present:
                yield Segment(base + off, n * sector, SegmentState.PRESENT, off0 + off)
            else:
                yield Segment(base + off, n * sector, SegmentState.ABSENT)


def block_segments(bat: VhdxBat, bitmaps: SectorBitmaps, block: int, lo: int, hi: int,
                   *, differencing: bool) -> Iterator[Segment]:
    """Segments of block ``block`` for in-block byte range [lo, hi)."""
    base = block * bat.block_size
    ent = bat[bat.index(block)]
    st = S.bat_state(ent)
    if st == S.PAYLOAD_BLOCK_FULLY_PRESENT:
        yield Segment(base + lo, hi - lo, SegmentState.PRESENT, S.bat_offset(ent) + lo)
    elif st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT and differencing:
        yield from bitmaps.segments(block, lo, hi)
    elif st in READS_ZERO:
        # 2.5.1.1: ZERO reads zeros. UNMAPPED content is "undefined"; qemu and libvhdi
        # read it as zeros (discutils lvm2.vhdx has 25 such blocks), and so do we.
        yield Segment(base + lo, hi - lo, SegmentState.ZERO)
    elif st in (*UNDEFINED, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
        # NOT_PRESENT: the parent's data (differencing) or zeros (dynamic). UNDEFINED
        # likewise. PARTIALLY_PRESENT is meaningless without a parent (2.5.1.1).
        yield Segment(base + lo, hi - lo, SegmentState.ABSENT)
    else:
        raise ImageError(f"BAT entry of block {block} has reserved state {st} "
                         "(MS-VHDX 2.5.1.1)", path=bat.path)
