"""remediate: the whole manual cure in one pass.

The chain ending at NEWEST becomes one new disk (fixed by default: allocated, never grows
again), written once with zeros skipped, verified against digests taken while writing,
then swapped in: the result takes the base disk's name and the old chain moves to an
archive folder beside it (or is deleted with ``delete``). With ``output`` the result goes
there and the chain stays as it was. Originals are untouched until verification passes,
and the base disk's name points at a complete disk (old or new) at every instant.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from typing import Any

from vhdlib import formats
from vhdlib.chain import open as open_disk
from vhdlib.errors import DependentChildrenError, UsageError
from vhdlib.hyperv.nextsteps import for_remediation as hyperv_next_steps
from vhdlib.inuse.model import Purpose
from vhdlib.ops import carry, retire
from vhdlib.ops.convert import CopyOperation
from vhdlib.ops.merge import find_dependents
from vhdlib.ops.operation import layer_warnings, step
from vhdlib.ops.options import ARCHIVE, ATTRIBUTES, DELETE, LENIENT, NEW_DISK, RECLAIM, Option
from vhdlib.plan import Plan
from vhdlib.space import volume_of

SUBJECT = Option("newest", str, help="the newest file of the chain (the running checkpoint)",
                 positional=True, required=True, form="path")
OPTIONS = (
    Option("output", str, None, "write the result here; leave the chain", form="path",
           metavar="PATH"),
    *NEW_DISK,
    Option("force", bool, False, "go ahead when other differencing disks depend on a disk "
           "of the chain (they lose their parent; --output leaves the chain in place "
           "instead)"),
    RECLAIM, *ATTRIBUTES, ARCHIVE, DELETE, LENIENT,
)


class RemediateOperation(CopyOperation):
    """``remediate NEWEST [--output PATH] [--type fixed|dynamic] [--archive DIR|--delete]``."""

    kind = "remediate"
    phases = ("create", "copy", "verify", "finalize", "swap", "retire")
    subject = SUBJECT
    options = OPTIONS
    second = "output"

    @classmethod
    def prepare(cls, newest: str, output: str | None = None, *, type: str = "fixed",
                format: str | None = None, archive: str | None = None, delete: bool = False,
                block_size: int | None = None, sparse: bool = False, lenient: bool = False,
                uuid: str | None = None, timestamp: int | None = None, force: bool = False,
                reclaim: str = "zeros", attributes_from: str | None = None,
                drop_attributes: bool = False,
                **unknown: Any) -> RemediateOperation:
        if unknown:
            raise UsageError(f"remediate: unknown option(s) {sorted(unknown)}")
        if archive and delete:
            raise UsageError("--archive and --delete exclude each other")
        if output and (archive or delete):
            raise UsageError("with --output the chain stays as it was: --archive/--delete "
                             "do not apply")
        options: dict[str, Any] = {
            "newest": os.path.abspath(newest), "output": output and os.path.abspath(output),
            "type": type, "format": format, "archive": archive and os.path.abspath(archive),
            "delete": delete, "block_size": block_size, "sparse": sparse, "lenient": lenient,
            "uuid": uuid, "timestamp": timestamp, "reclaim": reclaim,
            **carry.options(attributes_from, drop_attributes)}
        with open_disk(newest, lenient=lenient) as disk:
            # The destination depends on the base, known once the chain is open.
            base = os.path.abspath(disk.base.path)
            fmt = (format or (output and formats.name_from_suffix(output))
                   or formats.output_default(disk.base.format))
            if output:
                dest = os.path.abspath(output)
                if os.path.exists(dest):
                    raise UsageError("output exists; refusing to overwrite it", path=dest)
            else:
                stem, _ext = os.path.splitext(base)
                dest = base if formats.name_from_suffix(base) == fmt \
                    else stem + formats.get(fmt).suffixes[0]
            options["format"] = fmt
            state, spec = cls._prepare_copy(disk, dest, options)
            state = replace(state, base=base)
            if not output:
                state = replace(state, archive_dir=options["archive"] or os.path.join(
                    os.path.dirname(base), f"vhdmend-archive-{state.id[:8]}"))
                # The swap retires every layer: another snapshot branch hanging off one of
                # them would lose its parent (its locators would find the new disk, another
                # id). Refused like a merge's dependents; --force overrides.
                dependents = find_dependents(
                    {os.path.dirname(p) for p in state.chain},
                    {str(layer.link_id) for layer in disk.layers},
                    {os.path.realpath(p) for p in state.chain})
                if dependents and not force:
                    raise DependentChildrenError(
                        "other differencing disks depend on disks this remediation retires "
                        "(--output leaves the chain in place; --force to go ahead)",
                        path=base, children=dependents)
            plan = Plan(cls.kind, dest, list(state.chain), [dest])
            op = cls(state, plan)
            op._copy_plan_steps(disk, spec)
            if output:
                op.plan.steps.append(step("swap", f"rename the result to {dest}"))
            else:
                arch = state.archive_dir
                op.plan.steps.append(step(
                    "swap", f"archive the chain in {arch}, then the result takes the name "
                    f"{dest}", irreversible=True))
                if not retire.same_volume(arch, base):
                    chain_bytes = sum(os.path.getsize(p) for p in state.chain)
                    op.budget.add(arch, chain_bytes, "copy of the chain into the archive "
                                  "(another volume)")
                if delete:
                    op.plan.steps.append(step("retire", "delete the archived chain",
                                              irreversible=True))
            op.plan.details["chain_file_bytes"] = sum(
                os.path.getsize(p) for p in state.chain)
            op.plan.details["base"] = base
            op.plan.details["volume"] = volume_of(dest).path
            op.plan.space = op.budget.to_list()
            op.plan.details["warnings"] = layer_warnings(disk.layers)
        return op

    def later_phase(self, phase: str, budget: int, deadline: float) -> None:
        if phase == "swap":
            self._swap()
        elif phase == "retire":
            self._retire()
        else:
            super().later_phase(phase, budget, deadline)

    def _swap(self) -> None:
        dest = self.state.destination
        if self.state.options.get("output"):
            self.publish(dest)
            self.advance("done")
            return
        cursor = int(self.state.cursor)
        chain = self.state.chain
        arch = self.state.archive_dir
        if cursor == 0:
            # Last look before touching originals: nothing may have changed since the copy.
            self.verify_inputs()
            self.irreversible("swap")
            # The new disk takes the base's owner, mode, ACL and xattrs before its name.
            self.update(attributes=carry.onto_partial(self.state, self.state.base))
            for path in chain:
                retire.archive_file(path, arch)
            cursor = 1
            self.update(archived=tuple(os.path.join(arch, os.path.basename(p)) for p in chain),
                        cursor=cursor)
            self.checkpoint()
        if cursor == 1:
            # Atomic: the name switches from the old base to the verified new disk.
            self.publish(dest)
            cursor = 2
            self.update(cursor=cursor)
            self.checkpoint()
        if cursor == 2:
            # The old layers live on in the archive; only the result keeps a name here.
            retire.unlink_durably([p for p in chain if p != dest])
            self.next_phase()
            if not self.state.options.get("delete"):
                self.advance("done")

    def _retire(self) -> None:
        self.irreversible("retire")
        retire.unlink_durably(list(self.state.archived))
        with contextlib.suppress(OSError):
            os.rmdir(self.state.archive_dir)
        self.advance("done")

    def in_use_targets(self, step: str) -> tuple[list[str], Purpose]:
        """In place: the whole chain, any opener blocks, at the start (an early refusal
        spares a copy whose swap would be refused) and before the swap; before ``retire``
        the archived layers it deletes. With ``output``: as convert."""
        state = self.state
        if state.options.get("output"):
            return super().in_use_targets(step)
        if step == "retire" or state.phase == "retire":
            return list(state.archived), Purpose.MODIFY
        chain = list(state.chain)
        if state.phase == "swap" and state.cursor >= 2:
            # Published: the base's name is the result now, no longer the old chain.
            chain = [p for p in chain if p != state.destination]
        return chain, Purpose.MODIFY

    def cancel(self) -> None:
        if self.state.phase in ("swap", "retire"):
            # Past the point of no return the swap completes; cancel only before it.
            return
        super().cancel()

    def result(self) -> dict[str, Any]:
        dest = self.state.destination
        st = os.stat(dest)
        res: dict[str, Any] = {"output": dest, "file_size": st.st_size,
                               "allocated_bytes": st.st_blocks * 512,
                               "chain_file_bytes": self.plan.details.get("chain_file_bytes")}
        if self.state.archive_dir and not self.state.options.get("delete"):
            res["archive"] = self.state.archive_dir
        # What the Hyper-V host must do now (vhdlib.hyperv: the VM using the chain, if found).
        options = self.state.options
        res["next_steps"] = hyperv_next_steps(
            list(self.state.chain), dest, archive=self.state.archive_dir or None,
            deleted=bool(options.get("delete")), in_place=not options.get("output"),
            dropped_attributes=self.state.attributes.get("dropped") or ())
        return res
