"""Compaction's view of a VHDX: payload blocks are the slots (1 MiB aligned); sector
bitmaps, regions and the log are reserved ranges."""

from __future__ import annotations

import os
from typing import Protocol

from vhdlib.errors import UsageError
from vhdlib.layer import BlockStore
from vhdlib.vhdx import structs as S
from vhdlib.vhdx.bat import ALLOCATED, UNDEFINED, SectorBitmaps, VhdxBat

MiB = S.MiB
_CHUNK = 8 * MiB
_ZEROS = bytes(_CHUNK)


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


class SlotHost(Protocol):
    """What the block store needs from its VHDX layer (all public)."""

    path: str
    bat: VhdxBat
    bitmaps: SectorBitmaps

    @property
    def fd(self) -> int: ...

    @property
    def differencing(self) -> bool: ...

    def pread_into(self, file_offset: int, buf: memoryview) -> None: ...

    def write_file(self, offset: int, data: memoryview) -> None: ...

    def begin_change(self) -> None: ...

    def flush(self) -> None: ...

    def clean_log(self) -> None: ...

    def reserved_ranges(self) -> list[tuple[int, int]]: ...

    def extend_allocation(self, end: int) -> None: ...

    def refresh_allocation(self) -> None: ...


class VhdxBlockStore(BlockStore):
    """Payload blocks as compaction slots (1 MiB aligned; bitmaps are reserved ranges)."""

    def __init__(self, layer: SlotHost) -> None:
        self.layer = layer
        self.bat = layer.bat
        self.block_count = layer.bat.data_blocks
        self.block_size = layer.bat.block_size
        self.slot_size = layer.bat.block_size
        self.slot_alignment = MiB

    def slot_offset(self, index: int) -> int | None:
        return self.bat.payload_offset(index)

    def droppable(self, index: int) -> bool:
        lay = self.layer
        off = self.slot_offset(index)
        if off is None:
            return not lay.differencing or self.bat.payload_state(index) in UNDEFINED
        if lay.differencing:
            if self.bat.payload_state(index) == S.PAYLOAD_BLOCK_FULLY_PRESENT:
                return False
            bits = lay.bitmaps.bits(index)
            return bits.count(0) == len(bits)
        buf = bytearray(_CHUNK)
        pos = 0
        while pos < self.block_size:
            n = min(len(buf), self.block_size - pos)
            mv = memoryview(buf)[:n]
            lay.pread_into(off + pos, mv)
            # A memcmp against zeros, stopping at the first data byte and copying nothing
            # (the count it replaces copied and scanned each 8 MiB read: ~50x slower).
            if not _ZEROS.startswith(mv):
                return False
            pos += n
        return True

    def drop(self, index: int) -> None:
        """The BAT entry changes in memory only: the layer's next flush (compaction's,
        before each checkpoint) takes all of a chunk's drops through the log in one entry,
        or as few as the log holds (:meth:`vhdlib.vhdx.log.LogWriter.commit`), not one
        entry (and four fsyncs) a block. A kill before it leaves the file as it was."""
        lay = self.layer
        idx = self.bat.index(index)
        # Dynamic: ZERO says "reads zeros" explicitly. Differencing: NOT_PRESENT, since a
        # droppable block defines no sector (its zeros would otherwise hide the parent).
        state = S.PAYLOAD_BLOCK_NOT_PRESENT if lay.differencing else S.PAYLOAD_BLOCK_ZERO
        if self.bat[idx] == S.bat_entry(state, 0):
            return
        lay.begin_change()
        self.bat.set(idx, S.bat_entry(state, 0))

    def move(self, index: int, new_offset: int) -> None:
        """Copy the slot now; the BAT entry changes in memory, as a drop's does: the
        layer's flush fsyncs the copies before the log entry that points at them (and
        moves never write where another move reads: :func:`vhdlib.ops.compact.plan_moves`
        puts slots only into holes, so the old slots stay as the file's BAT says)."""
        lay = self.layer
        if new_offset % MiB:
            raise UsageError(f"slot offset {new_offset} is not 1 MiB aligned", path=lay.path)
        idx = self.bat.index(index)
        ent = self.bat[idx]
        old = S.bat_offset(ent)
        if S.bat_state(ent) not in ALLOCATED:
            raise UsageError(f"block {index} has no slot to move", path=lay.path)
        if old == new_offset:
            return
        lay.begin_change()
        buf = bytearray(min(self.block_size, _CHUNK))
        pos = 0
        while pos < self.block_size:
            n = min(len(buf), self.block_size - pos)
            mv = memoryview(buf)[:n]
            lay.pread_into(old + pos, mv)
            lay.write_file(new_offset + pos, mv)
            pos += n
        lay.extend_allocation(new_offset + self.block_size)
        self.bat.set(idx, S.bat_entry(S.bat_state(ent), new_offset))

    def reserved_ranges(self) -> list[tuple[int, int]]:
        return self.layer.reserved_ranges()

    def data_area_start(self) -> int:
        return max(hi for _, hi in self.reserved_ranges()[:4])

    def truncate_after(self, end: int) -> None:
        lay = self.layer
        # A kill after the truncation must leave a file that opens: no active log entry
        # may name the old size as flushed.
        lay.clean_log()
        end = align_up(end, MiB)
        reserved_end = max(hi for _, hi in self.reserved_ranges())
        end = max(end, reserved_end)
        os.ftruncate(lay.fd, end)
        os.fsync(lay.fd)
        lay.refresh_allocation()
