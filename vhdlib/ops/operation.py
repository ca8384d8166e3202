"""The resumable-operation engine shared by merge, compact, convert and remediate.

An operation is a sequence of *phases*; each phase advances a *cursor* in bounded
*chunks*. After every chunk the outputs are fsync'd and the checkpoint (the journal,
``<target>.vhdmend.json``) is replaced atomically, so a ``kill -9`` at any instant
resumes from the last checkpoint. Every chunk is idempotent and deterministic given the
journal, which is why a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, ClassVar, Generic, TypeVar

from vhdlib import fileio, inuse, journal
from vhdlib.errors import (
    Cancelled,
    ChangedInputError,
    FenceError,
    ImageError,
    InsufficientSpaceError,
    VhdlibError,
)
from vhdlib.formats import open_layer
from vhdlib.inuse.model import Purpose
from vhdlib.layer import FileIdentity, Layer
from vhdlib.ops.options import Option
from vhdlib.ops.state import State
from vhdlib.plan import Plan, Step
from vhdlib.progress import (
    CancelCheck,
    CheckpointCallback,
    IrreversibleHook,
    Progress,
    ProgressCallback,
)
from vhdlib.space import SpaceBudget

log = logging.getLogger(__name__)

#: Bytes of I/O between checkpoints; with ``CHUNK_SECONDS`` bounds a chunk to seconds.
CHUNK_BYTES = 256 << 20
CHUNK_SECONDS = 3.0
#: Seconds between progress reports inside a chunk.
PROGRESS_INTERVAL = 0.2
DONE = "done"

S = TypeVar("S", bound=State)


def identity_of(path: str, lenient: bool = False) -> FileIdentity:
    """Identity of an image file (opened read-only just for this)."""
    with open_layer(path, lenient=lenient) as layer:
        return layer.identity()


#: What :func:`verify_identity` compares by default: all of :class:`FileIdentity`.
IDENTITY_FIELDS = ("size", "mtime_ns", "uuid", "checksum")


def verify_identity(expected: dict[str, Any], *, lenient: bool = False,
                    fields: tuple[str, ...] = IDENTITY_FIELDS) -> None:
    """Refuse with :class:`ChangedInputError` naming what changed since the journal.

    ``fields``: a subset, for a file the operation writes itself (an in-place compaction
    resumed after a kill changed the mtime itself; see :mod:`vhdlib.ops.compact`).
    """
    want = FileIdentity.from_dict(expected)
    if not os.path.exists(want.path):
        raise ChangedInputError("input disappeared since the operation started",
                                path=want.path)
    got = identity_of(want.path, lenient)
    changed = [name for name in fields if getattr(got, name) != getattr(want, name)]
    if changed:
        detail = ", ".join(f"{n} {getattr(want, n)} -> {getattr(got, n)}" for n in changed)
        raise ChangedInputError(f"input changed since the operation started: {detail}",
                                path=want.path)


def layer_warnings(layers: list[Layer]) -> list[str]:
    """What opening the inputs accepted (``--lenient``: a bad checksum...), per file; goes
    into the plan's ``details["warnings"]`` for the caller to show."""
    return [f"{layer.path}: {w}" for layer in layers for w in layer.warnings]


def seed_of(kind: str, layers: list[Layer]) -> str:
    """A seed for the ids an in-place operation must generate (hex).

    Derived from the inputs' ids and structure checksums, so two runs of the same
    operation on the same files (or a run and its resumption) write the same bytes.
    """
    h = hashlib.sha256(kind.encode())
    for layer in layers:
        h.update(layer.link_id.bytes)
        h.update(layer.structure_checksum().encode())
    return h.hexdigest()[:32]


class Operation(ABC, Generic[S]):
    """Base of every resumable operation. Subclasses define phases and chunk work.

    ``state`` (a frozen :class:`~vhdlib.ops.state.State` of the subclass's kind) is what
    the journal holds; :meth:`update` replaces it with a changed copy.
    """

    kind: ClassVar[str]
    #: Phases in order; the last one before ``done`` should be quick and idempotent.
    phases: ClassVar[tuple[str, ...]]
    #: The file the operation works on (``prepare``'s first argument).
    subject: ClassVar[Option]
    #: Its options, declared once (:mod:`vhdlib.ops.options`).
    options: ClassVar[tuple[Option, ...]] = ()
    #: The option ``prepare`` also takes as its second positional argument.
    second: ClassVar[str | None] = None
    #: The class of its checkpoint.
    state_type: ClassVar[type[State]] = State
    #: A read-only operation (it changes no file) runs without a run lock and without a
    #: journal: nothing to protect from a second run, nothing to resume on disk.
    read_only: ClassVar[bool] = False

    def __init__(self, state: S, plan: Plan) -> None:
        self.state: S = state
        self.plan = plan
        self.budget = SpaceBudget()
        self._progress_cb: ProgressCallback | None = None
        self._before_irreversible: IrreversibleHook | None = None
        self._fence: int | None = state.fence
        #: Fence given to :func:`vhdlib.ops.resume`, used when ``run`` gets none.
        self.resume_fence: int | None = None
        self._last_report = 0.0
        #: How the last in-use check was made (see :meth:`check_in_use`).
        self.in_use_check = ""

    # --- state ------------------------------------------------------------------------

    def update(self, **changes: Any) -> None:
        """Replace the state with a copy that has ``changes``."""
        self.state = replace(self.state, **changes)

    @property
    def journal_path(self) -> str:
        return self.state.journal

    @property
    def started(self) -> bool:
        return self.state.phase is not None

    # --- the run loop -----------------------------------------------------------------

    def run(self, *, progress: ProgressCallback | None = None,
            cancel: CancelCheck | None = None, pause: CancelCheck | None = None,
            on_checkpoint: CheckpointCallback | None = None,
            before_irreversible: IrreversibleHook | None = None,
            fence: int | None = None, chunk_bytes: int = CHUNK_BYTES,
            chunk_seconds: float = CHUNK_SECONDS) -> dict[str, Any]:
        """Run (or continue) to the end, a chunk at a time.

        Returns ``{"status": "done", ...result}`` or ``{"status": "paused"}`` when
        ``pause()`` returned true (the journal stays, ``resume`` continues). ``cancel()``
        returning true undoes what can be undone and raises :class:`Cancelled`; originals
        are valid either way.
        """
        self._progress_cb = progress
        self._before_irreversible = before_irreversible
        if self.read_only:
            return self._run_unjournaled(cancel, pause, on_checkpoint, chunk_bytes,
                                         chunk_seconds)
        lock = journal.RunLock(self.journal_path)
        lock.acquire()
        finished = False
        try:
            outcome = self._run_locked(cancel, pause, on_checkpoint, fence, chunk_bytes,
                                       chunk_seconds)
            finished = outcome["status"] == "done"
            return outcome
        except Cancelled:
            finished = True
            raise
        finally:
            lock.release(remove_file=finished or not os.path.exists(self.journal_path))

    def _run_unjournaled(self, cancel: CancelCheck | None, pause: CancelCheck | None,
                         on_checkpoint: CheckpointCallback | None, chunk_bytes: int,
                         chunk_seconds: float) -> dict[str, Any]:
        """The run loop of a read-only operation: chunks, progress, cancel and pause, but
        no lock, no journal and no fence (it changes nothing). A pause keeps the position
        in this object: ``run()`` again continues."""
        if not self.started:
            self.update(phase=self.phases[0], cursor=0, started=int(time.time()))
        try:
            self.open_files()
            while self.state.phase != DONE:
                self.chunk(chunk_bytes, time.monotonic() + chunk_seconds)
                if on_checkpoint is not None:
                    on_checkpoint(self.state.to_dict())
                self.report()
                if self.state.phase == DONE:
                    break
                if cancel is not None and cancel():
                    raise Cancelled(f"{self.kind} cancelled (it changed nothing)",
                                    path=self.state.target)
                if pause is not None and pause():
                    return {"status": "paused"}
            result = self.result()
        finally:
            self.close_files()
        self.report()
        return {"status": "done", **result}

    def _run_locked(self, cancel: CancelCheck | None, pause: CancelCheck | None,
                    on_checkpoint: CheckpointCallback | None, fence: int | None,
                    chunk_bytes: int, chunk_seconds: float) -> dict[str, Any]:
        fence = fence if fence is not None else self.resume_fence
        if fence is not None:
            self._take_fence(fence)
        self.check_in_use(self.kind)
        if not self.started:
            self._start()
        try:
            self.open_files()
            while self.state.phase != DONE:
                deadline = time.monotonic() + chunk_seconds
                self.chunk(chunk_bytes, deadline)
                self.checkpoint(on_checkpoint)
                if self.state.phase == DONE:
                    break
                if cancel is not None and cancel():
                    self.close_files()
                    self.cancel()
                    raise Cancelled(f"{self.kind} cancelled; originals are valid",
                                    path=self.state.target)
                if pause is not None and pause():
                    return {"status": "paused", "journal": self.journal_path}
            result = self.result()
            for key, value in self.notes().items():
                result.setdefault(key, value)
        except ImageError as e:
            if self._input_at_fault(e):
                # A corrupt input: no resume can succeed, so undo as a cancel does (the
                # partial output and the journal go; originals are valid) and say why.
                self.close_files()
                self.cancel()
            raise
        except InsufficientSpaceError as e:
            raise InsufficientSpaceError(
                f"{e.message}; the journal is kept: free space and run "
                f"'vhdmend resume {self.journal_path}'", path=e.path, needed=e.needed,
                available=e.available) from e
        except OSError as e:
            if fileio.is_full_volume(e):
                raise InsufficientSpaceError(
                    f"volume full while writing ({e.strerror}); the journal is kept: free "
                    f"space and run 'vhdmend resume {self.journal_path}'",
                    path=e.filename or self.state.target) from e
            raise
        finally:
            self.close_files()
        # The lock's name goes before the journal: a kill between leaves a journal to
        # resume (which takes a fresh lock), never a lock file beside a finished result.
        journal.RunLock.forget(self.journal_path)
        journal.remove(self.journal_path)
        self.report()
        return {"status": "done", **result}

    def _input_at_fault(self, e: ImageError) -> bool:
        """True when ``e`` names a file the operation only reads. An error on what it
        writes (the target, a verification mismatch of the output) keeps the journal."""
        if not e.path:
            return False
        inputs = {os.path.abspath(p) for p in self.state.read_paths}
        inputs.discard(os.path.abspath(self.state.target))
        return os.path.abspath(e.path) in inputs

    def _start(self) -> None:
        journal.refuse_if_present(self.state.target)
        self.budget.check()
        self.update(phase=self.phases[0], cursor=0, started=int(time.time()))
        journal.save(self.journal_path, self.state.to_dict())
        log.info("%s %s: started, journal %s", self.kind, self.state.id, self.journal_path)

    def checkpoint(self, on_checkpoint: CheckpointCallback | None = None) -> None:
        """Make outputs durable, then the journal; then tell the caller.

        A fenced executor never overwrites the journal of a newer one: a process that
        was frozen past its lease stops here instead of rolling the cursor back.
        """
        self.flush_files()
        if self._fence is None:
            journal.save(self.journal_path, self.state.to_dict())
        else:
            # Check and save under the fence lock: a set_fence cannot land in between
            # (our save would roll its fence back, and we would go on as if current).
            with journal.fence_lock(self.journal_path):
                on_disk = self._journal_fence()
                if on_disk is not None and on_disk > self._fence:
                    raise FenceError(f"fence {self._fence} lost to {on_disk}; not "
                                     "checkpointing", path=self.journal_path)
                journal.save(self.journal_path, self.state.to_dict())
        if on_checkpoint is not None:
            on_checkpoint(self.state.to_dict())
        self.report()

    def advance(self, phase: str) -> None:
        """Move to the next phase (the cursor restarts at 0)."""
        log.debug("%s %s: phase %s -> %s", self.kind, self.state.id, self.state.phase, phase)
        self.update(phase=phase, cursor=0)

    def next_phase(self) -> None:
        assert self.state.phase is not None
        i = self.phases.index(self.state.phase)
        self.advance(self.phases[i + 1] if i + 1 < len(self.phases) else DONE)

    # --- fencing ----------------------------------------------------------------------

    def _take_fence(self, fence: int) -> None:
        # Before the first save there is no journal to race with, so no lock either
        lock = journal.fence_lock(self.journal_path) if self.started else contextlib.nullcontext()
        with lock:
            on_disk = self._journal_fence()
            if on_disk is not None and on_disk > fence:
                raise FenceError(f"fence {fence} is stale: the journal holds fence {on_disk}",
                                 path=self.journal_path)
            self._fence = fence
            self.update(fence=fence)
            if self.started:
                journal.save(self.journal_path, self.state.to_dict())

    def _journal_fence(self) -> int | None:
        if not os.path.exists(self.journal_path):
            return None
        try:
            value = journal.load(self.journal_path).get("fence")
        except VhdlibError:
            return None
        return int(value) if value is not None else None

    def irreversible(self, step: str) -> None:
        """Call before every irreversible step: the caller's hook, then the on-disk fence."""
        if self._before_irreversible is not None:
            self._before_irreversible(step)
        if self._fence is not None:
            on_disk = self._journal_fence()
            if on_disk is not None and on_disk != self._fence:
                raise FenceError(f"before {step}: fence {self._fence} lost to {on_disk}",
                                 path=self.journal_path)
        self.check_in_use(step)

    def check_in_use(self, step: str) -> None:
        """The in-use guard (:mod:`vhdlib.inuse`) before ``step``: refuses with
        :class:`~vhdlib.errors.FileInUseError` while another opener holds a file."""
        paths, purpose = self.in_use_targets(step)
        hint = self.journal_path if self.started else None
        self.in_use_check = inuse.guard(paths, purpose, step, resume_hint=hint).methods()

    # --- progress ---------------------------------------------------------------------

    def add_done(self, nbytes: int) -> None:
        """Count bytes done in the current phase; reports progress a few times a second
        between checkpoints too, so a bar moves smoothly within a chunk."""
        phase = self.state.phase
        assert phase is not None
        done = self.state.done
        self.update(done={**done, phase: done.get(phase, 0) + nbytes})
        now = time.monotonic()
        if self._progress_cb is not None and now - self._last_report >= PROGRESS_INTERVAL:
            self.report()

    def report(self) -> None:
        if self._progress_cb is None:
            return
        self._last_report = time.monotonic()
        phase = self.state.phase or self.phases[0]
        totals = {s.name: max(s.read_bytes, s.write_bytes) for s in self.plan.steps}
        done = self.state.done
        overall_total = sum(totals.values())
        overall_done = sum(min(done.get(k, 0), v) for k, v in totals.items())
        if phase == DONE:
            overall_done = overall_total
        self._progress_cb(Progress(self.kind, phase, min(done.get(phase, 0),
                                                         totals.get(phase, 0)),
                                   totals.get(phase, 0), overall_done, overall_total))

    # --- what subclasses implement ------------------------------------------------------

    def open_files(self) -> None:
        """Open inputs/outputs for the current phase (fresh run or resume)."""

    def flush_files(self) -> None:
        """fsync outputs (called before every journal write)."""

    def close_files(self) -> None:
        """Close whatever :meth:`open_files` opened (idempotent)."""

    @abstractmethod
    def chunk(self, budget: int, deadline: float) -> None:
        """Do at most ``budget`` bytes of I/O (or until ``deadline``) in the current phase."""

    def cancel(self) -> None:
        """Undo what can be undone after a cancel (remove partial outputs, the journal)."""
        journal.remove(self.journal_path)

    def result(self) -> dict[str, Any]:
        """What the finished operation produced (JSON-ready)."""
        return {}

    def in_use_targets(self, step: str) -> tuple[list[str], Purpose]:
        """The files the in-use guard checks before ``step``, and for what. By default
        (merge) every file of the chain: any opener blocks."""
        return list(self.state.read_paths or (self.state.target,)), Purpose.MODIFY

    def notes(self) -> dict[str, Any]:
        """What the result says beside :meth:`result`: how the in-use check was made."""
        return {"in_use_check": self.in_use_check} if self.in_use_check else {}

    def verify_inputs(self) -> None:
        """On resume: refuse when an input changed (only while inputs are still read)."""
        for ident in self.state.inputs:
            verify_identity(dict(ident), lenient=bool(self.state.options.get("lenient")))


def step(name: str, description: str, read: int = 0, write: int = 0,
         irreversible: bool = False) -> Step:
    """Shorthand for a plan step."""
    return Step(name, description, read, write, irreversible)
