"""compact: drop blocks that hold nothing, move tail blocks into the holes, shrink.

Dynamic disks lose every all-zero block; differencing disks lose only blocks with no
present sector (present zeros must stay: they hide parent data). Phases, each step
idempotent so a resumed run ends bit-identical:

* ``drop``: cursor = block index; droppable blocks are marked unallocated.
* ``move``: the move list is computed once (from the file after ``drop``) and stored in
  the journal; cursor = index into it. A move copies the slot into a hole *below* it,
  makes it durable, then repoints the BAT; the source is never a later destination.
* ``truncate``: the file ends after the last slot (VHD: then its footer).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, ClassVar

from vhdlib.chain import open as open_disk
from vhdlib.errors import DependentChildrenError, UsageError
from vhdlib.formats import open_layer
from vhdlib.inuse.model import Purpose
from vhdlib.layer import BlockStore, DiskType, Layer
from vhdlib.ops import reclaim as fs_reclaim
from vhdlib.ops.merge import find_dependents
from vhdlib.ops.operation import Operation, layer_warnings, seed_of, step
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
    with open_disk(path, lenient=lenient) as disk:
        ranges, details = fs_reclaim.plan(disk, block_size)
    blocks = [b for start, end in ranges for b in range(start // block_size, end // block_size)]
    return blocks, details


class CompactOperation(Operation[CompactState]):
    """``compact PATH``: in place, resumable."""

    kind: ClassVar[str] = "compact"
    phases = ("drop", "move", "truncate")
    subject = SUBJECT
    options = OPTIONS
    state_type = CompactState

    def __init__(self, state: CompactState, plan: Plan) -> None:
        super().__init__(state, plan)
        self.layer: Layer | None = None
        self.store: BlockStore | None = None

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
                drop_blocks=tuple(drop), reclaim=details)
            allocated = [i for i in range(store.block_count) if store.slot_offset(i) is not None]
            plan = Plan(cls.kind, os.path.abspath(path), [os.path.abspath(path)],
                        [os.path.abspath(path)])
            scan = len(allocated) * store.block_size
            plan.steps += [
                step("drop", f"scan {len(allocated)} allocated blocks, drop the empty ones",
                     read=scan),
                step("move", "move tail blocks into the holes (size known after the scan)"),
                step("truncate", "shrink the file"),
            ]
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

    def open_files(self) -> None:
        if self.layer is None:
            self.layer = open_layer(self.state.options["path"], writable=True,
                                    fmt=self.state.format)
            if not self._fs_mode:
                # Compaction changes where blocks live, not what the disk reads: children
                # linked to this disk's id must keep resolving to it.
                self.layer.keep_link_id()
            self.store = self.layer.block_store()

    def flush_files(self) -> None:
        if self.layer is not None:
            self.layer.flush()

    def close_files(self) -> None:
        if self.layer is not None:
            self.layer.close()
            self.layer = None
            self.store = None

    def chunk(self, budget: int, deadline: float) -> None:
        assert self.store is not None
        store = self.store
        phase = self.state.phase
        if phase == "drop":
            i = int(self.state.cursor)
            spent = 0
            while i < store.block_count and spent < budget and time.monotonic() < deadline:
                if store.slot_offset(i) is not None:
                    if store.droppable(i) or i in self._fs_drop:
                        store.drop(i)
                        self.update(dropped=int(self.state.dropped) + 1)
                    spent += store.block_size
                    self.add_done(store.block_size)
                i += 1
            self.update(cursor=i)
            if i >= store.block_count:
                self.flush_files()
                planned, end = plan_moves(store)
                self.update(moves=tuple(tuple(m) for m in planned), new_end=end)
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
        else:
            store.truncate_after(int(self.state.new_end))
            assert self.layer is not None
            # With --reclaim fs the content changed (free blocks now read zeros): a new
            # link id makes any child left elsewhere fail to resolve.
            self.layer.seal(bytes.fromhex(self.state.seed), keep_link_id=not self._fs_mode)
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
