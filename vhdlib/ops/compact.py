"""compact: drop blocks that hold nothing, move tail blocks into the holes, shrink.

Dynamic disks lose every all-zero block; differencing disks lose only blocks with no
present sector (present zeros must stay: they hide parent data). Phases, each step
idempotent so a resumed run ends bit-identical:

* ``drop``: cursor = block index; droppable blocks are marked unallocated.
* ``move``: the move list is computed once (from the file after ``drop``) and stored in
  the journal; cursor = index into it. A move copies the slot into a hole *below* it,
  makes it durable, then repoints the BAT; the source is never a later destination.
* ``verify`` (``--reclaim fs`` only, which changes what the disk reads): every block is
  read again and compared with the digests the drop phase took before changing it
  (:mod:`vhdlib.ops.blockdigest`); the blocks the file systems mark free must read zeros.
* ``truncate``: the file ends after the last slot (VHD: then its footer).

The disk must be the one planned on: a fresh run compares its whole identity (size, mtime,
id, checksums) before the first write; a resumed one what its own writes never change
before ``truncate`` (see :meth:`CompactOperation._check_target`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, ClassVar

from vhdlib.chain import Disk
from vhdlib.chain import open as open_disk
from vhdlib.errors import ChangedInputError, DependentChildrenError, ImageError, UsageError
from vhdlib.formats import open_layer
from vhdlib.inuse.model import Purpose
from vhdlib.layer import BlockStore, DiskType, Layer
from vhdlib.ops import blockdigest
from vhdlib.ops import reclaim as fs_reclaim
from vhdlib.ops.merge import find_dependents
from vhdlib.ops.operation import Operation, layer_warnings, seed_of, step, verify_identity
from vhdlib.ops.options import LENIENT, RECLAIM, Option
from vhdlib.ops.state import CompactState
from vhdlib.plan import Plan

log = logging.getLogger(__name__)

SUBJECT = Option("path", str, help="a dynamic or differencing disk", positional=True,
                 required=True, form="path")
OPTIONS = (LENIENT, RECLAIM)


def plan_moves(store: BlockStore) -> tuple[list[list[int]], int]:
    """Moves ``[block, from, to]`` packing slots downwards, and the file's new data end.

    Greedy and deterministic: the highest slot goes to the lowest hole below it that fits.
    """
    slot, align = store.slot_size, max(1, store.slot_alignment)
    slots = sorted((off, i) for i in range(store.block_count)
                   if (off := store.slot_offset(i)) is not None)
    used = sorted([tuple(r) for r in store.reserved_ranges()]
                  + [(off, off + slot) for off, _ in slots])
    start = store.data_area_start()
    # Free gaps between used ranges, above the data area start.
    gaps: list[list[int]] = []
    cursor = start
    for lo, hi in used:
        if lo > cursor:
            gaps.append([cursor, lo])
        cursor = max(cursor, hi)
    moves: list[list[int]] = []
    for off, index in reversed(slots):
        placed = False
        for gap in gaps:
            dest = -(-gap[0] // align) * align
            if dest >= off:
                break
            if dest + slot <= gap[1]:
                moves.append([index, off, dest])
                gap[0] = dest + slot
                placed = True
                break
        if not placed:
            break
    moved_from = {m[0] for m in moves}
    ends = [hi for lo, hi in store.reserved_ranges()]
    ends += [off + slot for off, i in slots if i not in moved_from]
    ends += [m[2] + slot for m in moves]
    return moves, max(ends) if ends else start


def _fs_blocks(path: str, layer: Layer, lenient: bool, block_size: int
               ) -> tuple[list[int], dict[str, Any]]:
    """Blocks the guest's file systems mark wholly free, for an in-place compact.

    Refused on a differencing disk (a dropped block would show its parent's data, not
    zeros) and on a disk other differencing disks depend on (their reads would change).
    """
    if layer.disk_type is DiskType.DIFFERENCING:
        raise UsageError("--reclaim fs cannot compact a differencing disk in place: a dropped "
                         "block would read its parent's data (remediate the chain instead)",
                         path=path)
    real = os.path.realpath(path)
    children = find_dependents({os.path.dirname(real)}, {str(layer.link_id)}, {real})
    if children:
        raise DependentChildrenError("--reclaim fs changes what this disk reads, and other "
                                     "differencing disks depend on it", path=path,
                                     children=children)
    return _scan(path, lenient, block_size)


def _scan(path: str, lenient: bool, block_size: int) -> tuple[list[int], dict[str, Any]]:
    """The blocks the guest's file systems mark wholly free, read-only."""
    with open_disk(path, lenient=lenient) as disk:
        ranges, details = fs_reclaim.plan(disk, block_size)
    blocks = [b for start, end in ranges for b in range(start // block_size, end // block_size)]
    return blocks, details


class CompactOperation(Operation[CompactState]):
    """``compact PATH``: in place, resumable."""

    kind: ClassVar[str] = "compact"
    phases = ("drop", "move", "verify", "truncate")
    subject = SUBJECT
    options = OPTIONS
    state_type = CompactState

    def __init__(self, state: CompactState, plan: Plan) -> None:
        super().__init__(state, plan)
        self.layer: Layer | None = None
        self.store: BlockStore | None = None
        #: The layer read as a disk (blocks by what they read), for the digests.
        self._view: Disk | None = None
        self._buf = bytearray(blockdigest.UNIT)
        #: True once this run checked the disk is the one planned on.
        self._target_checked = False

    @classmethod
    def prepare(cls, path: str, *, lenient: bool = False, reclaim: str = "zeros",
                **unknown: Any) -> CompactOperation:
        if unknown:
            raise UsageError(f"compact: unknown option(s) {sorted(unknown)}")
        mode = fs_reclaim.check_mode(reclaim)
        with open_layer(path, lenient=lenient) as layer:
            store = layer.block_store()
            if store is None or layer.disk_type is DiskType.FIXED:
                raise UsageError("a fixed disk cannot be compacted (convert it to dynamic)",
                                 path=path)
            drop, details = (_fs_blocks(path, layer, lenient, store.block_size)
                             if mode == "fs" else ([], {}))
            state = CompactState.fresh(
                cls.kind, path, {"path": os.path.abspath(path), "lenient": lenient,
                                 "reclaim": mode},
                format=layer.format, seed=seed_of(cls.kind, [layer]),
                output={"path": os.path.abspath(path), "uuid": str(layer.link_id)},
                inputs=(layer.identity().to_dict(),), drop_blocks=tuple(drop),
                reclaim=details)
            allocated = [i for i in range(store.block_count) if store.slot_offset(i) is not None]
            plan = Plan(cls.kind, os.path.abspath(path), [os.path.abspath(path)],
                        [os.path.abspath(path)])
            scan = len(allocated) * store.block_size
            plan.steps += [
                step("drop", f"scan {len(allocated)} allocated blocks, drop the empty ones",
                     read=scan),
                step("move", "move tail blocks into the holes (size known after the scan)"),
            ]
            if mode == "fs":
                kept = len(set(allocated) - set(drop)) * store.block_size
                plan.steps.append(step("verify", "re-read every block: kept ones as before, "
                                       "the free ones zeros", read=kept))
            plan.steps.append(step("truncate", "shrink the file"))
            plan.details.update({"allocated_blocks": len(allocated),
                                 "file_size": layer.file_size,
                                 "block_size": store.block_size})
            if mode == "fs":
                plan.details["reclaim"] = details
            op = cls(state, plan)
            op.budget.add(path, 4096, "journal")
            plan.space = op.budget.to_list()
            plan.details["warnings"] = layer_warnings([layer])
        return op

    @property
    def _fs_mode(self) -> bool:
        return self.state.options.get("reclaim") == "fs"

    @functools.cached_property
    def _fs_drop(self) -> frozenset[int]:
        return frozenset(self.state.drop_blocks)

    def _start(self) -> None:
        # Nothing written yet: the disk must be exactly the one the plan read (a guest
        # may have used the free space the drop list names since).
        self.verify_inputs()
        self._target_checked = True
        super()._start()

    def _check_target(self) -> None:
        """On resume: refuse with :class:`ChangedInputError` a disk someone else changed.

        A kill inside a chunk leaves our own writes after the checkpoint, so the mtime
        (and a VHDX's header checksum) cannot be compared; the size and the id can: up
        to ``truncate`` this operation changes neither, while a writer that allocates a
        block grows the file and a VHDX writer renews DataWriteGuid (MS-VHDX 2.2.2). A
        guest that wrote into blocks already allocated (a VHD changes nothing else)
        changed its allocation maps: with ``--reclaim fs`` in the drop phase, the file
        systems are scanned again and must name the same free blocks. ``truncate`` is
        not checked: it changes size and id itself, and moves no data (nor is a finished
        run, whose journal a kill left while the result was worked out).
        """
        phase = self.state.phase
        if not self.state.inputs or phase not in ("drop", "move", "verify"):
            return
        lenient = bool(self.state.options.get("lenient"))
        verify_identity(dict(self.state.inputs[0]), lenient=lenient, fields=("size", "uuid"))
        if self._fs_mode and phase == "drop":
            path = self.state.options["path"]
            block_size = int(self.plan.details["block_size"])
            blocks, _ = _scan(path, lenient, block_size)
            if tuple(blocks) != tuple(self.state.drop_blocks):
                gone = len(set(self.state.drop_blocks) - set(blocks))
                raise ChangedInputError(
                    f"the guest's file systems changed since the plan: {gone} block(s) it "
                    "called free are not any more (or a volume is no longer readable)",
                    path=path)

    def open_files(self) -> None:
        if self.layer is None:
            if not self._target_checked:
                self._check_target()
                self._target_checked = True
            self.layer = open_layer(self.state.options["path"], writable=True,
                                    fmt=self.state.format)
            if not self._fs_mode:
                # Compaction changes where blocks live, not what the disk reads: children
                # linked to this disk's id must keep resolving to it.
                self.layer.keep_link_id()
            self.store = self.layer.block_store()
            self._view = Disk([self.layer])

    def flush_files(self) -> None:
        if self.layer is not None:
            self.layer.flush()

    def close_files(self) -> None:
        if self.layer is not None:
            self.layer.close()
            self.layer = None
            self.store = None
            self._view = None
            # The next run() of this object (after a pause) checks the disk again.
            self._target_checked = False

    def chunk(self, budget: int, deadline: float) -> None:
        assert self.store is not None
        store = self.store
        phase = self.state.phase
        if phase == "drop":
            i = int(self.state.cursor)
            spent = 0
            while i < store.block_count and spent < budget and time.monotonic() < deadline:
                if store.slot_offset(i) is not None:
                    if self._drops(i):
                        store.drop(i)
                    spent += store.block_size
                    self.add_done(store.block_size)
                self._end_group(i)
                i += 1
            self.update(cursor=i)
            if i >= store.block_count:
                self.flush_files()
                planned, end = plan_moves(store)
                self.update(moves=tuple(tuple(m) for m in planned), new_end=end,
                            dropped=self._dropped_count())
                self.next_phase()
        elif phase == "move":
            moves = self.state.moves
            k = int(self.state.cursor)
            spent = 0
            while k < len(moves) and spent < budget and time.monotonic() < deadline:
                index, _src, dest = moves[k]
                store.move(index, dest)
                spent += store.slot_size
                k += 1
            self.update(cursor=k)
            if k >= len(moves):
                self.next_phase()
        elif phase == "verify":
            self._verify(budget, deadline)
        else:
            store.truncate_after(int(self.state.new_end))
            assert self.layer is not None
            seed = bytes.fromhex(self.state.seed)
            if self._fs_mode:
                # The content changed (free blocks now read zeros): a new link id makes
                # any child left elsewhere fail to resolve. renew_link_id, as merge does:
                # a VHD's seal keeps the footer's Unique Id (an output's is its --uuid).
                self.layer.renew_link_id(seed)
            else:
                self.layer.seal(seed, keep_link_id=True)
            self.next_phase()

    def _drops(self, i: int) -> bool:
        """Whether allocated block ``i`` goes; with ``--reclaim fs`` a kept block is
        digested as it reads now, before anything changes it (an all-zero one goes: a
        dynamic disk's block that reads zeros, what ``droppable`` tests, from the same
        read). Resumed after a kill, a block this chunk already dropped reads zeros and
        was left out anyway: the digest comes out the same."""
        assert self.store is not None and self._view is not None
        if not self._fs_mode:
            return self.store.droppable(i)
        if i in self._fs_drop:
            return True
        crc, zero = blockdigest.fold_block(self._view, i, self.store.block_size,
                                           int(self.state.crc), self._buf)
        self.update(crc=crc)
        return zero

    def _dropped_count(self) -> int:
        """Blocks the drop phase dropped: allocated at the plan less allocated now. Not a
        running count: a chunk redone after a kill finds the blocks it had dropped before
        the kill unallocated already, and would leave them out (the disk is the planned
        one, and only this operation changed its allocation: see :meth:`_check_target`)."""
        assert self.store is not None
        store = self.store
        left = sum(1 for i in range(store.block_count) if store.slot_offset(i) is not None)
        return int(self.plan.details["allocated_blocks"]) - left

    def _end_group(self, i: int) -> None:
        """After block ``i`` (drop phase): keep its group's digest once the group is done."""
        assert self.store is not None
        group = blockdigest.group_ended(i, self.store.block_size, self.store.block_count)
        if self._fs_mode and group is not None:
            self.update(digests={**self.state.digests, str(group): int(self.state.crc)},
                        crc=0)

    def _verify(self, budget: int, deadline: float) -> None:
        """Read every block again: the file systems' free blocks must read zeros, every
        group of the others must digest as before (ImageError on the first that does not;
        the journal stays)."""
        assert self.store is not None and self._view is not None
        if not self._fs_mode:
            self.next_phase()
            return
        store, path = self.store, self.state.options["path"]
        per = blockdigest.group_size(store.block_size)
        i = int(self.state.cursor)
        spent = 0
        while i < store.block_count and spent < budget and time.monotonic() < deadline:
            crc, zero = blockdigest.fold_block(self._view, i, store.block_size,
                                               int(self.state.crc), self._buf)
            if i in self._fs_drop and not zero:
                raise ImageError(f"verification failed: block {i}, free in the guest's file "
                                 "system and dropped, does not read zeros", path=path)
            self.update(crc=crc)
            if store.slot_offset(i) is not None:
                spent += store.block_size
                self.add_done(store.block_size)
            group = blockdigest.group_ended(i, store.block_size, store.block_count)
            if group is not None:
                want = self.state.digests.get(str(group))
                if want != crc:
                    before = "none" if want is None else f"{want:08x}"
                    raise ImageError(
                        f"verification failed: blocks {group * per} to {i} read differently "
                        f"from before the compaction (digest {crc:08x} != {before})",
                        path=path)
                self.update(crc=0)
            i += 1
        self.update(cursor=i)
        if i >= store.block_count:
            self.next_phase()

    def in_use_targets(self, step: str) -> tuple[list[str], Purpose]:
        """The file compacted: any opener blocks."""
        return [str(self.state.options.get("path") or self.state.target)], Purpose.MODIFY

    def result(self) -> dict[str, Any]:
        path = self.state.options["path"]
        st = os.stat(path)
        return {"output": path, "file_size": st.st_size, "allocated_bytes": st.st_blocks * 512,
                "dropped_blocks": int(self.state.dropped),
                "moved_blocks": len(self.state.moves),
                "file_size_before": self.plan.details.get("file_size")}
