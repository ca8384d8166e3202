"""The Celery task: run one execution of a job, chunk by chunk, through vhdlib.

The message carries only a job id. :meth:`JobRun.run` claims the job in Redis first: a
live lease held by another execution (a message redelivered after ``visibility_timeout``
while the first run goes on, or sent twice by the reaper) means *do nothing*. So no two
executions of one job ever run at once, whatever the broker does.

What runs is the job's kind (:mod:`service.kinds`): a read-only kind runs at once, with no
chain lock or journal; a mutating one runs its operation chunk by chunk. Per chunk:
progress to Redis (throttled), the job's small :class:`~service.job.Position` once the
chunk is durable in the on-disk journal (the journal is the checkpoint), a cancel/pause
check, and the lease check. Before every
irreversible step the execution proves it still holds the chain lock's latest fence; the
fence is also written into the journal, where vhdlib checks it again.

An execution that loses its job (lease lapsed, a newer fence in the journal: it was frozen,
SIGSTOP or a long pause, while another took over) stops without touching the job record:
it is not a failure of the job, whose new owner goes on.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from celery import shared_task

import vhdlib
from service import engine, kinds, paths, states
from service.chains import ChainLock, Held
from service.config import Settings
from service.errors import LostLease, ServiceError
from service.job import Job, Position
from service.kinds.inspect import jsonable
from service.problems import humane
from service.public_paths import Relativizer
from service.store import JobStore
from vhdlib import journal as vjournal
from vhdlib.errors import Cancelled, FenceError, OperationInProgressError, VhdlibError
from vhdlib.progress import Progress
from workers import runtime
from workers.dispatch import TASK_NAME, Send, send_job
from workers.heartbeat import Heartbeat
from workers.meter import ProgressMeter
from workers.throttle import Throttle

log = logging.getLogger(__name__)


@shared_task(name=TASK_NAME, bind=True, ignore_result=True)
def run_job(self: Any, job_id: str) -> str:
    """Run (or continue) job ``job_id``; returns what happened, for the worker log."""
    return JobRun(job_id, runtime.store(), runtime.settings(),
                  send=partial(send_job, celery=self.app)).run()


class JobRun:
    """One execution of one job."""

    def __init__(self, job_id: str, store: JobStore, settings: Settings, *,
                 send: Send | None = None) -> None:
        self.job_id = job_id
        if send is None:
            from workers.dispatch import dispatcher
            send = dispatcher(settings)
        #: Nudges another job (the waiters of a chain this run frees).
        self.send = send
        self.store = store
        self.s = settings
        self.token = secrets.token_hex(16)
        #: Rewrites storage-host paths in what this run stores (HTTP never shows one: D2).
        self.public = Relativizer(settings.roots, None)
        self.hb: Heartbeat | None = None
        self.lock: ChainLock | None = None
        #: The chain's identity (the base disk's id), once known.
        self.identity = ""
        self.held: Held | None = None
        self.meter = ProgressMeter()
        self._last_written_done = 0
        self._last_write = 0.0
        self._last_phase: str | None = None
        self._last_step = -1
        self._chunk_t = time.monotonic()
        self._chunk_done = 0
        self._chunks = 0
        self.throttle = Throttle(settings.max_rate)

    # --- the execution ----------------------------------------------------------------

    def run(self) -> str:
        outcome, job = self.store.claim(self.job_id, self.token, self.s.lease_seconds,
                                        runtime.worker_name(), self.s.max_attempts)
        if outcome != "claimed" or job is None:
            log.info("job %s: %s (state %s), nothing to run", self.job_id, outcome,
                     job.state if job else "gone")
            return outcome
        self._chunks = job.chunks
        self.hb = Heartbeat(self.store, self.job_id, self.token, self.s.lease_seconds)
        self.hb.start()
        try:
            return self._execute(job)
        except LostLease as e:
            log.warning("job %s: lost the job, stopping: %s", self.job_id, e)
            return "lost_lease"
        except FenceError as e:
            # A newer execution holds the job (we were frozen past our lease): not a job
            # failure. Leave the record to its owner; if there is none, the reaper requeues.
            log.warning("job %s: lost the job, fenced off: %s", self.job_id, e)
            return "fenced"
        except OperationInProgressError as e:
            if not str(e.path or "").endswith(".lock"):
                log.warning("job %s: failed: %s", self.job_id, e)
                self._finish_quietly("failed", e.to_dict(), only_if_owner=True)
                return "failed"
            return self._wait(f"the journal is held by another process ({e.path}): an "
                              "execution that stopped heartbeating; retrying")
        except Cancelled:
            self._finish_quietly("cancelled", None, only_if_owner=True)
            return "cancelled"
        except VhdlibError as e:
            log.warning("job %s: failed: %s", self.job_id, e)
            self._finish_quietly("failed", e.to_dict(), only_if_owner=True)
            return "failed"
        except ServiceError as e:
            log.warning("job %s: failed: %s", self.job_id, e)
            self._finish_quietly("failed", e.to_dict(), only_if_owner=True)
            return "failed"
        except Exception as e:
            log.exception("job %s: internal error", self.job_id)
            self._finish_quietly("failed", {"type": "internal", "title": type(e).__name__,
                                            "detail": str(e)}, only_if_owner=True)
            return "failed"
        finally:
            self.hb.stop()
            if self.lock is not None and self.held is not None:
                try:
                    self.lock.release(self.held)
                    self._wake_waiters()
                except Exception as e:  # the lease lapses on its own
                    log.warning("job %s: releasing chain lock failed: %s", self.job_id, e)
            try:
                self.store.release_lease(self.job_id, self.token)
            except ServiceError as e:
                log.warning("job %s: releasing lease failed: %s", self.job_id, e)

    def _finish_quietly(self, state: str, error: dict[str, Any] | None, *,
                        only_if_owner: bool) -> None:
        try:
            self._unreserve(self.job_id)
        except Exception as e:  # a stale reservation is dropped by the next job anyway
            log.warning("job %s: dropping the chain reservation failed: %s", self.job_id, e)
        try:
            self.store.transition(self.job_id, None, state,
                                  token=self.token if only_if_owner else None,
                                  set_fields={"error": self.public(humane(error))},
                                  delete=["lease_token"])
        except LostLease:
            log.warning("job %s: not marking %s: another execution owns it", self.job_id, state)

    def _execute(self, job: Job) -> str:
        self.public = Relativizer(self.s.roots, job.root)
        kind = kinds.get(job.type)
        path = paths.resolve(self.s.roots, job.root, job.path, must_exist=not kind.folder)
        root_real = paths.root_dir(self.s.roots, job.root)
        options = self._resolve_options(job, kind)
        backend = engine.backend(self.s.ops_backend)
        if kind.run is not None:
            # Read-only: no chain lock, no journal, no run lock.
            self._done(**kind.run(kinds.Context(path, root_real, options, backend,
                                                store=self.store, settings=self.s)))
            return "succeeded"
        assert kind.operation is not None
        identity = self._chain_identity(path, root_real)
        journal = job.checkpoint.journal if job.checkpoint else None
        if job.state == states.CANCELLING and not (journal and os.path.exists(journal)):
            # Nothing on disk to roll back: no need to wait for the chain lock.
            self._done(state=states.CANCELLED)
            return "cancelled"
        # Mutating operations: one per chain at a time.
        self.identity = identity
        self.lock = self.store.chains.lock(identity, self.s.lease_seconds)
        held = self.lock.acquire(job.id)
        if held is None:
            return self._wait_for_lock(job)
        if journal and os.path.exists(journal):
            # Fences only grow: one not above the journal's means Redis lost increments (a
            # failover, a restore); lift it above, so the journal fences off every older run.
            held = self.lock.raise_fence(held, int(vjournal.load(journal).get("fence") or 0))
            if held is None:
                return self._wait_for_lock(job)
        reserved_by = self._reserved_by_another(job.id)
        if reserved_by is not None:
            # A paused job keeps the chain: its journal describes these files.
            self.lock.release(held)
            self.store.chains.add_waiter(identity, job.id)
            self.lock = None
            return self._wait(f"waiting for the chain kept by paused job {reserved_by}")
        self.held = held
        assert self.hb is not None
        self.hb.attach(self.lock, held)
        if journal and os.path.exists(journal):
            log.info("job %s: resuming from %s with fence %d", job.id, journal, held.fence)
            vjournal.set_fence(Path(journal), held.fence)
            at = Position.of_state(vjournal.load(journal))
            op = backend.resume(journal, fence=held.fence)
            self._chunk_done = at.done
            # A resumed job's progress never goes back (it continues from the journal).
            self.meter = ProgressMeter((job.progress or {}).get("done", 0))
            self._last_written_done = self.meter.done
            self.store.add_event(job.id, {"type": "resumed", "fence": held.fence,
                                          "phase": at.phase, "cursor": at.cursor,
                                          "done": at.done})
        else:
            op = engine.prepare(backend, kind.operation, path, options)
            at = Position()
        plan = op.plan.to_dict() if getattr(op, "plan", None) is not None else None
        self.store.transition(job.id, None, None, token=self.token, set_fields={
            "fence": held.fence, "lock_key": identity, "plan": self.public(plan),
            "phase": "starting",
            "checkpoint": Position(engine.journal_path(op), at.phase, at.cursor, at.done,
                                   held.fence)})
        # Where the journal is must survive a failover: without it a new execution would
        # find the journal unknown to the job and fail (docs/OPERATIONS.md, HA).
        self.store.replicate()
        result = engine.run(
            op, progress=self._on_progress, cancel=self._cancel_requested,
            pause=self._pause_requested, on_checkpoint=self._on_checkpoint,
            before_irreversible=self._before_irreversible, fence=held.fence,
            chunk_bytes=self.s.chunk_bytes or None, chunk_seconds=self.s.chunk_seconds or None)
        if result.get("status") == "paused":
            self.store.chains.reserve(identity, job.id)
            self.store.transition(job.id, None, states.PAUSED, token=self.token,
                                  delete=["lease_token"])
            return "paused"
        fields: dict[str, Any] = {"result": jsonable(result)}
        if self.meter.first is not None:   # 100 % only now that the job is done
            fields["progress"] = self.meter.final(time.monotonic())
        self._done(**fields)
        return "succeeded"

    def _reserved_by_another(self, job_id: str) -> str | None:
        """The paused job that keeps this chain, when it is not ``job_id`` and still
        unfinished (a reservation of a finished or purged job is dropped)."""
        other = self.store.chains.reserved_by(self.identity)
        if other is None or other == job_id:
            return None
        state = self.store.state_of(other) or "gone"
        if state in states.TERMINAL or state == "gone":
            self.store.chains.unreserve(self.identity, other)
            return None
        return other

    def _unreserve(self, job_id: str) -> None:
        """Drop the chain's reservation if ``job_id`` holds it (compare-and-delete)."""
        if self.lock is not None:
            self.store.chains.unreserve(self.identity, job_id)

    def _done(self, *, state: str = "succeeded", **fields: Any) -> None:
        self._unreserve(self.job_id)
        self.store.transition(self.job_id, None, state, token=self.token,
                              set_fields={**self.public(fields), "phase": "done"
                                          if state == "succeeded"
                                          else None}, delete=["lease_token"])

    def _resolve_options(self, job: Job, kind: kinds.JobKind) -> dict[str, Any]:
        """Options naming files are relative to the root: resolve and confine them."""
        out = dict(job.options)
        for key, must_exist in kind.path_options.items():
            if out.get(key):
                out[key] = paths.resolve(self.s.roots, job.root, str(out[key]),
                                         must_exist=must_exist)
        return out

    def _chain_identity(self, path: str, root_real: str) -> str:
        """The base disk's id (what the chain lock is keyed by); refuses escaping chains."""
        with vhdlib.open(path) as disk:
            paths.check_chain(root_real, disk.chain)
            return f"{disk.base.link_id}"

    def _wait_for_lock(self, job: Job) -> str:
        assert self.lock is not None
        holder = self.lock.holder() or "another job"
        self.store.chains.add_waiter(self.identity, job.id)
        self.lock = None
        return self._wait(f"waiting for the chain lock held by job {holder}")

    def _wait(self, reason: str) -> str:
        """Back to ``queued`` with ``reason``, not counted as an attempt; the chain lock's
        release (or the reaper, every few seconds) nudges the job again.

        A cancel or pause asked for meanwhile is kept: ``cancelling`` stays (the reaper
        nudges it again, as a job without a lease), ``pausing`` becomes ``paused``."""
        job = self.store.get(self.job_id)
        target = states.when_waiting(job.state)
        self.store.transition(self.job_id, None, target, token=self.token,
                              set_fields={"reason": reason, "attempts": max(0, job.attempts - 1)},
                              delete=["lease_token"],
                              webhook="job.waiting" if target == states.QUEUED else None)
        log.info("job %s: %s", self.job_id, reason)
        return "waiting"

    def _wake_waiters(self) -> None:
        for other in self.store.chains.take_waiters(self.identity):
            try:
                self.send(other, self.store.get(other).host)
            except ServiceError as e:
                log.warning("job %s: cannot wake waiter %s: %s", self.job_id, other, e)

    # --- callbacks from the operation engine --------------------------------------------

    def _check_lease(self) -> None:
        if self.hb is not None and self.hb.lost:
            raise LostLease(f"job {self.job_id}: lease lost")

    def _on_progress(self, p: Progress) -> None:
        now = time.monotonic()
        self._check_lease()
        progress = self.meter.update(p, now)
        step = self.s.webhook_progress_step
        bucket = int(progress["percent"] // step) if step else -1
        hook = None
        if step and bucket > self._last_step and self._last_step >= 0 and bucket * step < 100:
            hook = "job.progress"
        if bucket > self._last_step:
            self._last_step = bucket
        # Written at least every chunk's worth of bytes: no shown jump is larger (D9).
        jump = self.s.chunk_bytes or max(1, progress["total"] // 50)
        wrote = (p.phase != self._last_phase or now - self._last_write >= self.s.progress_interval
                 or hook is not None or progress["done"] - self._last_written_done >= jump)
        if wrote:
            self._last_write, self._last_phase = now, p.phase
            self._last_written_done = progress["done"]
            self.store.transition(self.job_id, None, None, token=self.token,
                                  set_fields={"phase": p.phase, "progress": progress},
                                  webhook=hook)
        if wrote:
            # Nudge SSE listeners once the progress is readable.
            self.store.notify_progress(self.job_id, p.phase)
        self.throttle.pace(p.overall_done)

    def _on_checkpoint(self, state: dict[str, Any]) -> None:
        """A chunk is durable in the journal: record where the operation stands (a few
        scalars; the journal, not Redis, is what a resumed execution reads)."""
        self._check_lease()
        # A chunk ends at a checkpoint (progress is reported more often, within chunks):
        # the latency histogram and bytes processed are sampled here.
        now = time.monotonic()
        at = Position.of_state(state)
        if self.held is not None:   # the fence this execution runs under
            at = replace(at, fence=self.held.fence)
        self.store.observe_chunk(now - self._chunk_t, max(0, at.done - self._chunk_done))
        self._chunk_t, self._chunk_done = now, at.done
        self._chunks += 1
        self.store.transition(self.job_id, None, None, token=self.token,
                              set_fields={"checkpoint": at, "chunks": self._chunks})

    def _current_state(self) -> str:
        return self.store.state_of(self.job_id)

    # The engine asks cancel() then pause() after every chunk: one read answers both.
    _polled: str | None = None

    def _cancel_requested(self) -> bool:
        self._check_lease()
        self._polled = self._current_state()
        return self._polled == states.CANCELLING

    def _pause_requested(self) -> bool:
        state, self._polled = self._polled, None
        return (state or self._current_state()) == states.PAUSING

    def _before_irreversible(self, step: str) -> None:
        """Prove we still own the job and the chain's latest fence, or stop."""
        self._check_lease()
        assert self.lock is not None and self.held is not None
        if not self.lock.still_current(self.held):
            raise FenceError(f"before {step}: chain lock fence {self.held.fence} is no longer "
                             f"current (now {self.lock.current_fence()})")
        if self.store.get(self.job_id).lease_token != self.token:
            raise FenceError(f"before {step}: job taken over by another execution")
        self.store.add_event(self.job_id, {"type": "irreversible", "step": step,
                                           "fence": self.held.fence})
