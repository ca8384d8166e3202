"""The Block Allocation Table of a dynamic or differencing VHD, with its sector bitmaps
(spec "Block Allocation Table and Data Blocks").

A *slot* is one block's 512-byte-padded sector bitmap followed by its data. The table
keeps the entries, an LRU cache of bitmaps and, per block, whether its bitmap is all ones
(the fast path: the whole block is one PRESENT segment).

Block allocation (crash-safe)
    1. bitmap + data of the new blocks at the old trailing-footer position (overwriting it),
    2. the trailing footer at the new end,
    3. the BAT entries.
    A kill after 1 leaves no valid trailing footer: the copy at offset 0 is used (warning).
    A kill after 2 leaves an unreferenced slot before the footer (an orphan tail that
    repair trims). Writes into allocated differencing blocks write data, then bitmap bits.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from vhdlib import bitmap as bitmap_mod
from vhdlib.errors import ImageError, InternalError
from vhdlib.extents import Segment, SegmentState
from vhdlib.fileio import Buffer
from vhdlib.layer import Problem
from vhdlib.vhd.layout import ZEROS, slot_position
from vhdlib.vhd.structs import BAT_ENTRY_UNUSED, SECTOR_SIZE, bitmap_size, entries_bytes

#: Bitmaps kept in the LRU cache: 512 bytes each at the default block size, so 8 MiB
#: covers 32 GiB of allocated blocks (a copy and its verify pass read each once).
BITMAP_CACHE_BLOCKS = 16384
#: Blocks allocated per batched pwritev (keeps the iovec under IOV_MAX).
MAX_ALLOC_GROUP = 64

_FULL = 1  # block state cache: bitmap is all ones
_UNUSED_PAGE = b"\xff" * 4096
_UNUSED_VIEW = memoryview(_UNUSED_PAGE)
_UNUSED_ENTRY = b"\xff" * 4
_PARTIAL = 2

Reader = Callable[[int, int], bytes]          # (size, offset) -> bytes
Hint = Callable[[int, int], None]             # (offset, length): will be read soon
Writer = Callable[[int, Sequence[Buffer]], None]  # (offset, buffers)


class BlockTable:
    """The BAT entries of a disk's blocks (sector offsets; 0xFFFFFFFF = unallocated).

    Indexing gives the raw entries. ``read`` and ``write`` are the file's positional I/O
    (the layer's, so one place issues every syscall); ``hint``, when given, is told which
    bitmaps a walk over many blocks is about to read (a read-ahead hint, nothing more).
    """

    def __init__(self, entries: array, *, block_size: int, virtual_size: int,
                 table_offset: int, differencing: bool, path: str, read: Reader,
                 write: Writer, hint: Hint | None = None) -> None:
        self.entries = entries
        self.count = len(entries)
        self.block_size = block_size
        self.virtual_size = virtual_size
        self.table_offset = table_offset
        self.differencing = differencing
        self.sectors_per_block = block_size // SECTOR_SIZE
        self.bitmap_size = bitmap_size(block_size)
        self.slot_size = self.bitmap_size + block_size
        self.path = path
        self._read = read
        self._write = write
        self._hint = hint
        #: Blocks whose bitmap was hinted already (each is hinted at most once).
        self._hinted = bytearray(self.count)
        self._bitmaps: OrderedDict[int, bytes] = OrderedDict()
        self._state = bytearray(self.count)

    # --- entries -------------------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> array: ...

    def __getitem__(self, index: int | slice) -> int | array:
        return self.entries[index]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def slot_offset(self, block: int) -> int | None:
        """File offset of ``block``'s slot (its bitmap), ``None`` when unallocated."""
        e = self.entries[block]
        return None if e == BAT_ENTRY_UNUSED else e * SECTOR_SIZE

    def used(self) -> list[int]:
        """Indices of the entries in use (:func:`used_indices` of the table's bytes)."""
        return used_indices(self.entries.tobytes())

    def allocated_count(self) -> int:
        return len(self.used())

    def slots_end(self) -> int:
        """End of the last allocated slot (0 when none is)."""
        entries = self.entries
        return max((entries[i] * SECTOR_SIZE + self.slot_size for i in self.used()), default=0)

    def set_entry(self, block: int, value: int) -> None:
        """Write one entry (one aligned 4-byte write: atomic) and forget its bitmap."""
        self._write(self.table_offset + block * 4, [entries_bytes(array("I", [value]))])
        self.entries[block] = value
        self._bitmaps.pop(block, None)
        self._state[block] = 0
        self._hinted[block] = 0

    def validate(self, size: int, metadata: list[tuple[int, int]]) -> list[Problem]:
        """Entries inside the file, outside the metadata, not overlapping each other."""
        entries = self.entries
        return validate_slots(sorted((entries[i], i) for i in self.used()), size, metadata,
                              bitmap_size=self.bitmap_size, slot_size=self.slot_size)

    # --- sector bitmaps ----------------------------------------------------------------

    def bitmap(self, block: int) -> bytes:
        """Block ``block``'s sector bitmap (allocated blocks only), via the LRU cache."""
        bm = self._bitmaps.get(block)
        if bm is not None:
            self._bitmaps.move_to_end(block)
            return bm
        off = self.entries[block] * SECTOR_SIZE
        bm = self._read(self.bitmap_size, off)
        if len(bm) < self.bitmap_size:
            raise ImageError(f"truncated: bitmap of block {block} at {off} runs past the end",
                             path=self.path)
        self._cache_bitmap(block, bm)
        return bm

    def fully_present(self, block: int) -> bool:
        """True when the allocated ``block``'s bitmap is all ones (read once, then known)."""
        if self._state[block] != _FULL:
            self.bitmap(block)
        return self._state[block] == _FULL

    def hint_bitmaps(self, first: int, stop: int) -> None:
        """Announce the bitmaps of blocks ``[first, stop)`` not known yet, so that the
        reads that follow find them cached: one device round trip each costs more than
        the copy of a 16 GiB disk's whole map (4,300 of them: 0.5 s cold)."""
        hint = self._hint
        if hint is None or stop - first < 2:
            return
        entries, state, hinted, size = self.entries, self._state, self._hinted, self.bitmap_size
        for block in range(first, min(stop, self.count)):
            e = entries[block]
            if e != BAT_ENTRY_UNUSED and not state[block] and not hinted[block]:
                hinted[block] = 1
                hint(e * SECTOR_SIZE, size)

    def _cache_bitmap(self, block: int, bm: bytes) -> None:
        self._bitmaps[block] = bm
        self._bitmaps.move_to_end(block)
        if len(self._bitmaps) > BITMAP_CACHE_BLOCKS:
            self._bitmaps.popitem(last=False)
        self._state[block] = _FULL if self._is_full(bm) else _PARTIAL

    def _is_full(self, bm: bytes) -> bool:
        spb = self.sectors_per_block
        whole = spb // 8
        if bm.count(0xFF, 0, whole) != whole:
            return False
        rest = spb % 8
        # A block of fewer than 8 sectors: its bits sit at the top of the byte (MSB-first).
        return rest == 0 or (bm[whole] >> (8 - rest)) == (1 << rest) - 1

    def bits_past_end(self) -> int:
        """Sector bits set past the virtual end in the last block (Disk2vhd sets them)."""
        last = self.count - 1
        if self.entries[last] == BAT_ENTRY_UNUSED:
            return 0
        used = (self.virtual_size - last * self.block_size) // SECTOR_SIZE
        spb = self.sectors_per_block
        if used >= spb:
            return 0
        bm = self.bitmap(last)
        return sum(n for _, n, on in bitmap_mod.runs(bm, used, spb - used, msb_first=True)
                   if on)

    # --- reading -------------------------------------------------------------------

    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        """Segments of ``[offset, offset+length)`` block by block (not coalesced)."""
        bs = self.block_size
        bat = self.entries
        present = SegmentState.PRESENT
        absent = SegmentState.ABSENT
        pos = offset
        end = offset + length
        self.hint_bitmaps(offset // bs, -(-end // bs))
        while pos < end:
            block = pos // bs
            bstart = block * bs
            bend = min(bstart + bs, end)
            entry = bat[block]
            if entry == BAT_ENTRY_UNUSED:
                yield Segment(pos, bend - pos, absent)
            else:
                data = entry * SECTOR_SIZE + self.bitmap_size
                if self.fully_present(block):
                    yield Segment(pos, bend - pos, present, data + pos - bstart)
                else:
                    bm = self.bitmap(block)
                    first = (pos - bstart) // SECTOR_SIZE
                    count = (bend - pos) // SECTOR_SIZE
                    for s, n, on in bitmap_mod.runs(bm, first, count, msb_first=True):
                        if on:
                            yield Segment(bstart + s * SECTOR_SIZE, n * SECTOR_SIZE, present,
                                          data + s * SECTOR_SIZE)
                        else:
                            yield Segment(bstart + s * SECTOR_SIZE, n * SECTOR_SIZE, absent)
            pos = bend

    # --- writing -------------------------------------------------------------------

    def unallocated_run(self, block: int, end: int) -> int:
        """Last block of the run of unallocated blocks from ``block`` that one allocation
        covers (up to virtual ``end``, at most :data:`MAX_ALLOC_GROUP` blocks)."""
        bs = self.block_size
        bat = self.entries
        last = block
        while (last + 1) * bs < end and bat[last + 1] == BAT_ENTRY_UNUSED \
                and last + 1 - block < MAX_ALLOC_GROUP:
            last += 1
        return last

    def set_present(self, block: int, inblock: int, length: int) -> None:
        """Set the bits of ``[inblock, inblock+length)`` of an allocated block (after its
        data is written: a kill in between leaves the sectors absent, as before)."""
        if self.fully_present(block):
            return
        bm = self.bitmap(block)
        new = bytearray(bm)
        bitmap_mod.set_bits(new, inblock // SECTOR_SIZE, length // SECTOR_SIZE, msb_first=True)
        if new != bm:
            self._write(self.entries[block] * SECTOR_SIZE, [new])
            self._cache_bitmap(block, bytes(new))

    def allocate(self, first: int, stop: int, pos: int, mv: memoryview | None, length: int,
                 *, at: int, footer: bytes) -> int:
        """Allocate blocks ``[first, stop)`` from file offset ``at`` (the old trailing
        footer's position) and write virtual ``[pos, pos+length)`` into them.

        One pwritev for every bitmap and data piece (holes left where nothing is written:
        they lie past the old end of file, so they read zero), then ``footer`` at the new
        end, then the BAT entries: three syscalls for any number of blocks. Returns the
        new trailing footer's position.
        """
        bs = self.block_size
        bm_size = self.bitmap_size
        slot = slot_position(at)
        end = pos + length
        # Runs of (file offset, buffers); a gap over 64 KiB starts a new run (a hole).
        runs: list[tuple[int, list[Buffer]]] = [(at, [])]
        cursor = at  # file offset the next buffer of the last run lands at

        def put(where: int, buf: Buffer) -> None:
            nonlocal cursor
            gap = where - cursor
            if gap > 65536:
                runs.append((where, []))
            elif gap > 0:
                runs[-1][1].append(memoryview(ZEROS)[:gap])
            runs[-1][1].append(buf)
            cursor = where + len(buf)

        entries = array("I")
        bitmaps: list[bytes] = []
        full = b"\xff" * bm_size
        for block in range(first, stop):
            bstart = block * bs
            lo = max(pos, bstart)
            hi = min(end, bstart + bs)
            if self.differencing:
                bm = bytearray(bm_size)
                bitmap_mod.set_bits(bm, (lo - bstart) // SECTOR_SIZE, (hi - lo) // SECTOR_SIZE,
                                    msb_first=True)
                bmb = bytes(bm)
            elif bstart + bs > self.virtual_size:
                # The last block: mark only the sectors inside the disk (no bits past the end).
                bm = bytearray(bm_size)
                bitmap_mod.set_bits(bm, 0, (self.virtual_size - bstart) // SECTOR_SIZE,
                                    msb_first=True)
                bmb = bytes(bm)
            else:
                # Hyper-V and qemu mark a new dynamic block fully present; the rest is zero.
                bmb = full
            # The bitmap of the first slot overwrites the old footer (or a zero gap does).
            put(slot, bmb)
            if mv is not None:
                put(slot + bm_size + (lo - bstart), mv[lo - pos:hi - pos])
            entries.append(slot // SECTOR_SIZE)
            bitmaps.append(bmb)
            slot = slot_position(slot + self.slot_size)
        bufs_count = sum(len(b) for _, b in runs)
        if bufs_count > 1000:
            raise InternalError("allocation iovec too long")
        for where, bufs in runs:
            self._write(where, bufs)
        self._write(slot, [footer])
        self._write(self.table_offset + first * 4, [entries_bytes(entries)])
        for i, block in enumerate(range(first, stop)):
            self.entries[block] = entries[i]
            self._cache_bitmap(block, bitmaps[i])
        return slot


def used_indices(raw: bytes) -> list[int]:
    """Indices of the used entries in the BAT bytes ``raw`` (either byte order: an unused
    entry is all ones). A BAT is mostly unused and can hold a million entries: unused 4 KiB
    pages are skipped by one comparison each, and a page holding a used entry is halved
    down to 64-byte runs, so only runs with a used entry are looked at entry by entry."""
    used: list[int] = []
    for off in range(0, len(raw), 4096):
        page = raw[off:off + 4096]
        if page == _UNUSED_PAGE[:len(page)]:
            continue
        spans = [(0, len(page))]
        while spans:
            lo, hi = spans.pop()
            if page.startswith(_UNUSED_VIEW[:hi - lo], lo):
                continue
            if hi - lo > 64:
                mid = lo + ((hi - lo) >> 3 << 2)  # halves, each a whole number of entries
                spans.append((mid, hi))
                spans.append((lo, mid))
                continue
            used.extend(i >> 2 for i in range(off + lo, off + hi, 4)
                        if raw[i:i + 4] != _UNUSED_ENTRY)
    return used


def validate_slots(slots: list[tuple[int, int]], size: int, metadata: list[tuple[int, int]],
                   *, bitmap_size: int, slot_size: int) -> list[Problem]:
    """The problems of the used entries ``slots`` (``(entry, index)`` sorted) of a file of
    ``size`` bytes: slots past its end, over the ``metadata`` ranges, or over each other."""
    problems: list[Problem] = []
    prev_end = 0
    prev_idx = -1
    for entry, idx in slots:
        start = entry * SECTOR_SIZE
        end = start + slot_size
        if start + bitmap_size > size:
            problems.append(Problem("bat_past_eof", f"BAT entry {idx} points to {start}, "
                                    f"past the end of the file ({size})"))
        elif end > size:
            # Spec "Block Allocation Table": bitmap then block_size bytes of data; the
            # data must lie in the file too, not only the bitmap.
            problems.append(Problem("bat_past_eof", f"block {idx}'s data [{start}, {end}) "
                                    f"runs past the end of the file ({size})"))
        elif any(s < end and start < e for s, e in metadata):
            problems.append(Problem("bat_overlaps_metadata",
                                    f"BAT entry {idx} ({start}) overlaps the metadata"))
        if start < prev_end:
            problems.append(Problem("bat_overlap", f"BAT entries {prev_idx} and {idx} "
                                    f"overlap at {start}"))
        if end > prev_end:
            prev_end, prev_idx = end, idx
    return problems
