"""convert: any disk or chain -> a new VHD / VHDX / raw disk, fixed or dynamic, one pass.

Phases: ``create`` the output under a temporary name beside the destination, ``copy`` the
chain's data window by window (zeros skipped; a fixed output is reserved with fallocate
first), ``verify`` the written data against the digests taken while writing, ``finalize``
the output's metadata, ``publish`` it under its name. The sources are only read.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from vhdlib import fileio, formats, journal
from vhdlib.chain import Disk, check_sizes
from vhdlib.chain import open as open_disk
from vhdlib.errors import ImageError, InternalError, UsageError
from vhdlib.formats import open_layer
from vhdlib.inuse.model import Purpose
from vhdlib.layer import Layer
from vhdlib.ops import carry, output, reclaim, windows
from vhdlib.ops.operation import Operation, layer_warnings, step
from vhdlib.ops.options import ATTRIBUTES, LENIENT, NEW_DISK, RECLAIM, Option
from vhdlib.ops.state import CopyState
from vhdlib.ops.verifier import BackgroundVerifier
from vhdlib.plan import Plan

log = logging.getLogger(__name__)

PARTIAL = ".vhdmend-partial"

SUBJECT = Option("src", str, help="source disk (for a chain: the newest file)", positional=True,
                 required=True, form="path")
OPTIONS = (
    Option("output", str, None, "the new file (must not exist)", positional=True,
           required=True, form="path", metavar="dst"),
    *NEW_DISK, RECLAIM, *ATTRIBUTES, LENIENT,
)


class CopyOperation(Operation[CopyState]):
    """Shared engine of convert and remediate: a chain copied once into a new disk."""

    kind: ClassVar[str] = "copy"
    state_type = CopyState

    def __init__(self, state: CopyState, plan: Plan) -> None:
        super().__init__(state, plan)
        self.source: Disk | None = None
        self.out: Layer | None = None
        self._buf = bytearray(windows.UNIT)
        #: The copy's read-ahead, kept from one chunk to the next (see windows.CopyStream).
        self._stream: windows.CopyStream | None = None

    # --- preparation ------------------------------------------------------------------

    @classmethod
    def _prepare_copy(cls, disk: Disk, dest: str, options: dict[str, Any]
                      ) -> tuple[CopyState, output.OutputSpec]:
        """The checkpoint and output spec of a copy of the open ``disk`` to ``dest``."""
        check_sizes(disk)
        fmt = formats.get(options.get("format") or formats.output_default(disk.top.format))
        spec = output.OutputSpec(
            fmt=fmt.name, type=options.get("type") or "fixed",
            virtual_size=disk.virtual_size,
            block_size=int(options.get("block_size") or fmt.default_block_size),
            logical_sector_size=disk.logical_sector_size,
            # Explicit ids make the output reproducible (two runs, same bytes).
            uuid=str(options.get("uuid") or uuid.uuid4()),
            timestamp=int(options.get("timestamp") or time.time()),
            sparse=bool(options.get("sparse")))
        spec.validate()
        drop: tuple[tuple[int, ...], ...] = ()
        details: dict[str, Any] = {}
        if reclaim.check_mode(options.get("reclaim")) == "fs":
            unit = reclaim.granule(spec.block_size, spec.type == "dynamic")
            ranges, details = reclaim.plan(disk, unit)
            drop = tuple(tuple(r) for r in ranges)
        state = CopyState.fresh(
            cls.kind, dest, options,
            inputs=tuple(layer.identity().to_dict() for layer in disk.layers),
            chain=tuple(os.path.abspath(p) for p in disk.chain), output_spec=spec.to_dict(),
            output={"path": os.path.abspath(dest), "uuid": spec.uuid},
            destination=os.path.abspath(dest), partial=os.path.abspath(dest) + PARTIAL,
            drop=drop, reclaim=details)
        return state, spec

    def _copy_plan_steps(self, disk: Disk, spec: output.OutputSpec) -> int:
        """Add create/copy/verify steps and the space need; returns data bytes."""
        ranges = [(e.offset, e.length) for e in disk.extents()
                  if e.kind.value == "data"]
        data = sum(n for _, n in ranges)
        blocks = output.blocks_touched(ranges, spec.block_size)
        need = output.needed_bytes(spec, blocks, data)
        dest = self.state.destination
        self.budget.add(dest, need, f"new {spec.fmt} {spec.type} disk")
        self.budget.add(dest, 0 if os.path.exists(self.journal_path) else 4096, "journal")
        self.plan.steps += [
            step("create", f"create {spec.type} {spec.fmt} {self.state.partial}",
                 write=need if spec.type == "fixed" and not spec.sparse else 0),
            step("copy", f"copy {data} data bytes of {len(disk.layers)} layer(s) once, "
                 "zeros skipped", read=data, write=data),
            step("verify", "re-read the written data and compare digests", read=data),
            step("finalize", "finalize the output's metadata"),
        ]
        self.plan.details.update({"data_bytes": data, "data_blocks": blocks,
                                  "virtual_size": disk.virtual_size,
                                  "output": spec.to_dict(), "output_bytes": need})
        if self.state.reclaim:
            self.plan.details["reclaim"] = self.state.reclaim
        return data

    # --- files --------------------------------------------------------------------------

    @property
    def spec(self) -> output.OutputSpec:
        return output.OutputSpec.from_dict(dict(self.state.output_spec))

    @functools.cached_property
    def _drop(self) -> list[list[int]]:
        # Lists, as windows.process_window bisects them (the journal gives tuples back).
        return [list(r) for r in self.state.drop]

    def open_files(self) -> None:
        phase = self.state.phase
        if phase in ("create", "copy", "verify"):
            if not self._inputs_verified:
                self.verify_inputs()
                self._inputs_verified = True
            if self.source is None:
                self.source = open_disk(self.state.chain[0],
                                        lenient=bool(self.state.options.get("lenient")))
        if phase == "copy" and self.out is None:
            self.out = open_layer(self.state.partial, writable=True,
                                  fmt=self.spec.fmt)
            # A kill may have left a block allocated past the last checkpoint: trim it
            # so new blocks land where an uninterrupted run puts them.
            for what in self.out.repair():
                log.info("%s %s: resume repair: %s", self.kind, self.state.id, what)

    _inputs_verified = False

    def flush_files(self) -> None:
        if self.out is not None:
            self.out.flush()

    def close_files(self) -> None:
        self._close_stream()
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.source is not None:
            self.source.close()
            self.source = None

    # --- phases -------------------------------------------------------------------------

    def chunk(self, budget: int, deadline: float) -> None:
        phase = self.state.phase
        assert phase is not None
        if phase == "create":
            self._create()
        elif phase == "copy":
            self._copy(budget, deadline)
        elif phase == "verify":
            self._verify(budget, deadline)
        elif phase == "finalize":
            self._finalize()
        else:
            self.later_phase(phase, budget, deadline)

    def later_phase(self, phase: str, budget: int, deadline: float) -> None:
        raise InternalError(f"{self.kind}: unknown phase {phase!r}")

    def _create(self) -> None:
        partial = self.state.partial
        if os.path.exists(partial):
            # Killed while creating: creation is deterministic, start it again.
            os.unlink(partial)
        layer = output.create(partial, self.spec)
        layer.flush()
        layer.close()
        journal.fsync_dir(os.path.dirname(partial))
        self.next_phase()
        self.open_files()

    def _walk_windows(self, budget: int, deadline: float,
                      visit: Callable[[int], windows.WindowResult]) -> bool:
        """Visit windows from the cursor until the budget or deadline; the budget counts
        the bytes ``visit(index)`` really read (a window of dropped blocks costs next to
        nothing), progress the DATA bytes it covered. True when the last window is done
        (phase advanced)."""
        assert self.source is not None
        total = windows.window_count(self.source.virtual_size)
        index = int(self.state.cursor)
        spent = 0
        while index < total and spent < budget and time.monotonic() < deadline:
            done = visit(index)
            spent += done.io
            self.add_done(done.read)
            index += 1
        self.update(cursor=index)
        if index < total:
            return False
        self.next_phase()
        return True

    def _copy(self, budget: int, deadline: float) -> None:
        assert self.source is not None and self.out is not None
        source, out = self.source, self.out
        sink = _WritebackSink(out)
        cursor = int(self.state.cursor)
        if self._stream is None or self._stream.next != cursor:
            self._close_stream()
            self._stream = windows.CopyStream(source, cursor, self._drop)
        stream = self._stream

        def copy(index: int) -> windows.WindowResult:
            done = windows.process_window(source, index, sink, self._buf, stream=stream)
            if done.read:
                self.update(digests={**self.state.digests, str(index): done.digest})
            return done

        verifier = self._background_verifier()
        try:
            done = self._walk_windows(budget, deadline, copy)
        except BaseException:
            self._close_stream()
            verifier.finish_quietly()
            raise
        self._collect(verifier)
        if done:
            self._close_stream()
            self.close_output()
            # The verify phase starts where the background verification stopped.
            self.update(cursor=int(self.state.verified))

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _background_verifier(self) -> BackgroundVerifier:
        """Verify, while this chunk copies, the windows already copied and checkpointed
        (outputs whose checkpointed bytes never change again, fixed or dynamic: see
        :mod:`vhdlib.ops.verifier`)."""
        verified = int(self.state.verified)
        copied = int(self.state.cursor)
        spec = self.spec
        if not spec.format.verify_behind:
            copied = verified  # nothing to do in the background
        digests = self.state.digests
        return BackgroundVerifier(
            self.state.chain[0], self.state.partial, spec.fmt,
            bool(self.state.options.get("lenient")), verified, copied,
            lambda i: digests.get(str(i), 0)).start()

    def _collect(self, verifier: BackgroundVerifier) -> None:
        verifier.finish()
        self.update(verified=verifier.next)
        done = self.state.done
        self.update(done={**done, "verify": done.get("verify", 0) + verifier.bytes_read})

    def close_output(self) -> None:
        if self.out is not None:
            self.out.flush()
            self.out.close()
            self.out = None

    def _verify(self, budget: int, deadline: float) -> None:
        assert self.source is not None
        source = self.source
        with open_disk(self.state.partial, resolve_parents=False,
                       fmt=self.spec.fmt) as written:

            def verify(index: int) -> windows.WindowResult:
                # No digest: the source has no data there, so the output must read zeros.
                want = self.state.digests.get(str(index), 0)
                done = windows.process_window(source, index, None, self._buf,
                                              read_from=written)
                if done.digest != want:
                    raise ImageError(
                        f"verification failed: window {index} of the output reads "
                        f"differently from the source (digest {done.digest:08x} != "
                        f"{want:08x})", path=self.state.partial)
                return done

            done = self._walk_windows(budget, deadline, verify)
        if done and self.source is not None:
            self.source.close()
            self.source = None

    def _finalize(self) -> None:
        with open_layer(self.state.partial, writable=True, fmt=self.spec.fmt) as layer:
            layer.seal(uuid.UUID(self.spec.uuid).bytes)
            layer.flush()
        self.next_phase()

    def publish(self, dest: str) -> None:
        """Rename the finished partial output to ``dest`` (atomic, durable)."""
        partial = self.state.partial
        if os.path.exists(partial):
            carried = carry.before_publish(self.state)
            if carried is not None:
                self.update(attributes=carried)
            os.replace(partial, dest)
        elif not os.path.exists(dest):
            raise InternalError("neither the partial output nor the result exists",
                                path=dest)
        journal.fsync_dir(os.path.dirname(dest))

    def in_use_targets(self, step: str) -> tuple[list[str], Purpose]:
        """A copy to a new path only reads the chain: a writer blocks."""
        return list(self.state.chain), Purpose.READ

    def notes(self) -> dict[str, Any]:
        notes = super().notes()
        if self.state.attributes:  # where they came from, what was dropped
            notes["attributes"] = dict(self.state.attributes)
        return notes

    def cancel(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state.partial)
        super().cancel()


class ConvertOperation(CopyOperation):
    """``convert SRC DST --type fixed|dynamic [--format vhd|vhdx|raw]``."""

    kind = "convert"
    phases = ("create", "copy", "verify", "finalize", "publish")
    subject = SUBJECT
    options = OPTIONS
    second = "output"

    @classmethod
    def prepare(cls, source: str, output: str | None = None, *, type: str = "fixed",
                format: str | None = None, block_size: int | None = None,
                sparse: bool = False, lenient: bool = False, uuid: str | None = None,
                timestamp: int | None = None, reclaim: str = "zeros",
                attributes_from: str | None = None, drop_attributes: bool = False,
                **unknown: Any) -> ConvertOperation:
        if unknown:
            raise UsageError(f"convert: unknown option(s) {sorted(unknown)}")
        if not output:
            raise UsageError("convert needs a destination path")
        dest = os.path.abspath(output)
        if os.path.exists(dest):
            raise UsageError("destination exists; refusing to overwrite it", path=dest)
        if not os.path.isdir(os.path.dirname(dest)):
            raise UsageError("destination folder does not exist", path=dest)
        fmt = format or formats.name_from_suffix(dest)
        options = {"source": os.path.abspath(source), "output": dest, "type": type,
                   "format": fmt, "block_size": block_size, "sparse": sparse,
                   "lenient": lenient, "uuid": uuid, "timestamp": timestamp,
                   "reclaim": reclaim, **carry.options(attributes_from, drop_attributes)}
        with open_disk(source, lenient=lenient) as disk:
            state, spec = cls._prepare_copy(disk, dest, options)
            plan = Plan(cls.kind, dest, list(state.chain), [dest])
            op = cls(state, plan)
            op._copy_plan_steps(disk, spec)
            op.plan.steps.append(step("publish", f"rename the result to {dest}"))
            op.plan.space = op.budget.to_list()
            op.plan.details["warnings"] = layer_warnings(disk.layers)
        return op

    def later_phase(self, phase: str, budget: int, deadline: float) -> None:
        if phase == "publish":
            self.publish(self.state.destination)
            self.next_phase()
            return
        super().later_phase(phase, budget, deadline)

    def result(self) -> dict[str, Any]:
        dest = self.state.destination
        return {"output": dest, "file_size": os.path.getsize(dest)}


class _WritebackSink:
    """``out.write`` that asks the kernel to start writing the output to the device every
    :data:`WRITEBACK_BYTES` (:func:`vhdlib.fileio.start_writeback`): the device writes
    while the next units are read, instead of all at the checkpoint's fsync. The bytes,
    their order and the checkpoints are the same; only the timing of the writeback moves.
    """

    def __init__(self, out: Layer) -> None:
        self.out = out
        self.pending = 0

    def __call__(self, offset: int, data: memoryview) -> None:
        self.out.write(offset, data)
        self.pending += len(data)
        if self.pending >= WRITEBACK_BYTES:
            self.pending = 0
            fileio.start_writeback(self.out.fd)


#: Output bytes between two writeback requests of a copy.
WRITEBACK_BYTES = 16 << 20
