"""merge: Merge-VHD semantics, in one pass.

``merge CHILD [--into ANCESTOR]`` writes what the layers above ANCESTOR define (newest
data winning) into ANCESTOR, in place, each sector once, then retires the merged layers.
While merging the chain ending at CHILD reads exactly as before at every instant: only
sectors the children already define change in the ancestor. Refused when another
differencing disk depends on a disk that would change (``force`` overrides).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any, ClassVar

from vhdlib import formats
from vhdlib.chain import Disk, check_sizes
from vhdlib.chain import open as open_disk
from vhdlib.errors import (
    ChangedInputError,
    DependentChildrenError,
    UnsupportedError,
    UsageError,
    VhdlibError,
)
from vhdlib.extents import ExtentKind
from vhdlib.formats import open_layer
from vhdlib.layer import Layer
from vhdlib.ops import retire
from vhdlib.ops.operation import Operation, layer_warnings, seed_of, step
from vhdlib.ops.options import ARCHIVE, DELETE, LENIENT, Option
from vhdlib.ops.state import MergeState
from vhdlib.plan import Plan

log = logging.getLogger(__name__)

UNIT = 8 << 20
_ZERO = bytes(UNIT)
_ZERO_VIEW = memoryview(_ZERO)

SUBJECT = Option("child", str, help="the differencing disk to merge (newest of what merges)",
                 positional=True, required=True, form="path")
OPTIONS = (
    Option("into", str, None, "ancestor to merge into (default: the parent)", form="path",
           metavar="ANCESTOR", exists=True),
    Option("force", bool, False, "merge even when other differencing disks depend on a disk "
           "that changes"),
    ARCHIVE, DELETE, LENIENT,
)


def find_dependents(folders: set[str], ids: set[str], chain: set[str]) -> list[str]:
    """Differencing disks in ``folders`` outside ``chain`` whose parent id is in ``ids``.

    Every file with a suffix of a registered format is looked at (a child of any format
    may link to a disk that changes)."""
    suffixes = formats.all_suffixes()
    found: list[str] = []
    for folder in sorted(folders):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not name.lower().endswith(suffixes) or not os.path.isfile(path):
                continue
            if os.path.realpath(path) in chain:
                continue
            try:
                with open_layer(path, lenient=True) as layer:
                    link = layer.parent_link
                    if link is not None and (str(link.expected_id) in ids or any(
                            str(a) in ids for a in link.alternate_ids)):
                        found.append(path)
            except VhdlibError:
                continue
    return found


class MergeOperation(Operation[MergeState]):
    """Collapse the layers above an ancestor into it, in place."""

    kind: ClassVar[str] = "merge"
    phases = ("merge", "retire")
    subject = SUBJECT
    options = OPTIONS
    second = "into"
    state_type = MergeState

    def __init__(self, state: MergeState, plan: Plan) -> None:
        super().__init__(state, plan)
        self.disk: Disk | None = None
        self.ancestor: Layer | None = None

    @classmethod
    def prepare(cls, child: str, into: str | None = None, *, force: bool = False,
                archive: str | None = None, delete: bool = False, lenient: bool = False,
                **unknown: Any) -> MergeOperation:
        if unknown:
            raise UsageError(f"merge: unknown option(s) {sorted(unknown)}")
        if archive and delete:
            raise UsageError("--archive and --delete exclude each other")
        disk = open_disk(child, lenient=lenient)
        with disk:
            check_sizes(disk)
            if len(disk.layers) < 2:
                raise UsageError("not a differencing disk: nothing to merge", path=child)
            levels = 1
            if into is not None:
                matches = [i for i, layer in enumerate(disk.layers)
                           if os.path.exists(into) and os.path.samefile(layer.path, into)]
                if not matches or matches[0] == 0:
                    raise UsageError(f"{into} is not an ancestor of {child}; chain: "
                                     + " <- ".join(reversed(disk.chain)), path=child)
                levels = matches[0]
            ancestor = disk.layers[levels]
            if any(layer.virtual_size != ancestor.virtual_size for layer in disk.layers[:levels]):
                raise UnsupportedError("layers differ in virtual size; resize first",
                                       path=child)
            children = disk.layers[:levels]
            target = ancestor.path
            options = {"child": os.path.abspath(child), "into": os.path.abspath(target),
                       "force": force, "archive": archive and os.path.abspath(archive),
                       "delete": delete, "lenient": lenient}
            state = MergeState.fresh(
                cls.kind, target, options,
                chain=tuple(os.path.abspath(layer.path) for layer in disk.layers),
                levels=levels, inputs=tuple(layer.identity().to_dict() for layer in children),
                ancestor_id=str(ancestor.link_id), seed=seed_of(cls.kind, [ancestor, *children]),
                output={"path": os.path.abspath(target), "uuid": str(ancestor.link_id)})
            state = replace(state, archive_dir=str(options["archive"] or os.path.join(
                os.path.dirname(os.path.abspath(target)), f"vhdmend-archive-{state.id[:8]}")))
            # Disks that change: the ancestor (content) and the merged children (retired).
            changing = {str(layer.link_id) for layer in disk.layers[:levels + 1]}
            folders = {os.path.dirname(os.path.abspath(layer.path))
                       for layer in disk.layers[:levels + 1]}
            chain_real = {os.path.realpath(p) for p in state.chain}
            dependents = find_dependents(folders, changing, chain_real)
            if dependents and not force:
                raise DependentChildrenError(
                    "other differencing disks depend on disks this merge changes "
                    "(--force to merge anyway)", path=target, children=dependents)
            plan = Plan(cls.kind, target, list(state.chain[:levels]), [target])
            op = cls(state, plan)
            op._plan_merge(disk, levels, ancestor)
            op.plan.details["dependents_overridden"] = dependents
            op.plan.details["warnings"] = layer_warnings(disk.layers)
        return op

    def _plan_merge(self, disk: Disk, levels: int, ancestor: Layer) -> None:
        ranges = [(e.offset, e.length, e.kind) for e in disk.extents(levels=levels)
                  if e.kind is not ExtentKind.UNALLOCATED]
        data = sum(n for _, n, k in ranges if k is ExtentKind.DATA)
        zero = sum(n for _, n, k in ranges if k is ExtentKind.ZERO)
        new_bytes = 0
        store = ancestor.block_store()
        if store is not None:
            touched: set[int] = set()
            for off, n, _ in ranges:
                touched.update(range(off // store.block_size,
                                     (off + n - 1) // store.block_size + 1))
            new_blocks = sum(1 for b in touched if store.slot_offset(b) is None)
            new_bytes = new_blocks * store.slot_size
            self.plan.details["new_blocks"] = new_blocks
        self.budget.add(ancestor.path, new_bytes + 4096, "blocks the ancestor must allocate "
                        "(+ journal)")
        archive = self.state.archive_dir
        if not self.state.options["delete"] and not retire.same_volume(archive,
                                                                           ancestor.path):
            self.budget.add(archive, sum(os.path.getsize(p)
                                         for p in self.state.chain[:levels]),
                            "copy of the merged layers into the archive (another volume)")
        self.plan.steps += [
            step("merge", f"write {data} data bytes and {zero} zero bytes of {levels} "
                 f"layer(s) into {ancestor.path}, each sector once", read=data,
                 write=data + zero),
            step("retire", ("delete" if self.state.options["delete"] else "archive")
                 + " the merged layers", irreversible=True),
        ]
        self.plan.details.update({"data_bytes": data, "zero_bytes": zero,
                                  "ancestor": ancestor.path, "levels": levels})
        self.plan.space = self.budget.to_list()

    # --- files --------------------------------------------------------------------------

    def open_files(self) -> None:
        if self.state.phase != "merge" or self.disk is not None:
            return
        self.verify_inputs()
        lenient = bool(self.state.options.get("lenient"))
        self.disk = open_disk(self.state.chain[0], lenient=lenient)
        if tuple(os.path.abspath(p) for p in self.disk.chain) != self.state.chain:
            raise UnsupportedError("the chain changed since the merge started",
                                   path=self.state.chain[0])
        self.ancestor = open_layer(self.state.options["into"], writable=True)
        if str(self.ancestor.link_id) != self.state.ancestor_id:
            raise ChangedInputError(
                f"the ancestor's id changed since the merge started: "
                f"{self.state.ancestor_id} -> {self.ancestor.link_id}",
                path=self.ancestor.path)
        # The children link to the ancestor's id; keep it until they are retired so the
        # chain stays readable (and a cancel leaves it reading as before).
        self.ancestor.keep_link_id()
        for what in self.ancestor.repair():
            log.info("merge %s: resume repair: %s", self.state.id, what)

    def flush_files(self) -> None:
        if self.ancestor is not None:
            self.ancestor.flush()

    def close_files(self) -> None:
        if self.ancestor is not None:
            self.ancestor.close()
            self.ancestor = None
        if self.disk is not None:
            self.disk.close()
            self.disk = None

    # --- phases -------------------------------------------------------------------------

    def chunk(self, budget: int, deadline: float) -> None:
        if self.state.phase == "merge":
            self._merge(budget, deadline)
        else:
            self._retire()

    def _merge(self, budget: int, deadline: float) -> None:
        assert self.disk is not None and self.ancestor is not None
        disk, anc = self.disk, self.ancestor
        levels = int(self.state.levels)
        pos = int(self.state.cursor)
        size = disk.virtual_size
        spent = 0
        buf = bytearray(UNIT)
        while pos < size and spent < budget and time.monotonic() < deadline:
            # Look ahead a bounded span so a huge sparse disk still checkpoints often.
            span_end = min(size, pos + (1 << 30))
            # Where this pass stops: the span's end, or earlier when the budget or the
            # deadline runs out inside it (the cursor must honour both, or a dense 1 GiB
            # span would be one chunk: no checkpoint, no cancel for that long).
            stop = span_end
            for ext in disk.extents(pos, span_end - pos, levels=levels):
                if spent >= budget or time.monotonic() >= deadline:
                    stop = ext.offset
                    break
                if ext.kind is ExtentKind.UNALLOCATED:
                    continue
                if ext.kind is ExtentKind.ZERO:
                    anc.write_zeroes(ext.offset, ext.length)
                    spent += 0
                    continue
                off = ext.offset
                while off < ext.end:
                    if spent >= budget or time.monotonic() >= deadline:
                        break
                    n = min(UNIT - off % UNIT, ext.end - off)
                    view = memoryview(buf)[:n]
                    assert ext.layer is not None
                    disk.layers[ext.layer].pread_into(ext.file_offset + (off - ext.offset),
                                                      view)
                    # One reused buffer; the zero test compares in place (a memcmp).
                    if buf.startswith(_ZERO_VIEW[:n]):
                        anc.write_zeroes(off, n)
                    else:
                        anc.write(off, view)
                    view.release()
                    self.add_done(n)
                    spent += n
                    off += n
                if off < ext.end:
                    stop = off
                    break
            pos = stop
        self.update(cursor=pos)
        if pos >= size:
            self.next_phase()
            self.close_files()

    def _retire(self) -> None:
        levels = int(self.state.levels)
        merged = self.state.chain[:levels]
        self.irreversible("retire")
        with open_layer(self.state.options["into"], writable=True) as anc:
            # The ancestor's content changed: it takes a new identity, derived from the
            # seed so a resumed merge ends bit-identical (idempotent after a kill). The
            # retired children then no longer resolve to it: never left looking valid.
            anc.renew_link_id(bytes.fromhex(self.state.seed))
            anc.flush()
        if not self.state.options["delete"]:
            for path in merged:
                if os.path.exists(path):
                    retire.archive_file(path, self.state.archive_dir)
        retire.unlink_durably(list(merged))
        self.advance("done")

    def cancel(self) -> None:
        # Nothing to undo: the ancestor only gained sectors the children still hide.
        super().cancel()

    def result(self) -> dict[str, Any]:
        into = self.state.options["into"]
        res: dict[str, Any] = {"output": into, "file_size": os.path.getsize(into),
                               "merged": list(self.state.chain[:int(self.state.levels)])}
        if not self.state.options["delete"]:
            res["archive"] = self.state.archive_dir
        return res
