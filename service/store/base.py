"""The abstract job store: the rules, on top of a few storage primitives."""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ulid import ULID

from service import states
from service.chains import Chains
from service.errors import Conflict, IdempotencyMismatch, LostLease, NotFound
from service.job import (
    IDEMPOTENCY_IN_FLIGHT,
    Job,
    decode_page_token,
    encode_field,
    encode_page_token,
    iso,
    without,
)
from service.lease import Lease
from service.volumes.store import VolumeStore

log = logging.getLogger(__name__)


#: The job hash field counting its webhooks (not a Job attribute: only the outbox reads it).
WEBHOOK_SEQ = "webhook_seq"


def _field(raw: Mapping[Any, Any], name: str) -> str | None:
    v = raw.get(name, raw.get(name.encode()))
    return v.decode() if isinstance(v, bytes) else v


@dataclass
class Change:
    """One atomic write to a job, computed by :meth:`JobStore.transition` from the record
    as read; a backend applies it whole or not at all."""

    job: Job
    updated: Job
    values: dict[str, str] = field(default_factory=dict)
    nulls: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    #: ``(delivery_id, record JSON)`` of a webhook queued with the change (the outbox).
    webhook: tuple[str, str] | None = None

    @property
    def moved(self) -> bool:
        return self.updated.state != self.job.state


class JobStore(ABC):
    """Jobs, their events, leases, idempotency keys, webhooks and counters."""

    #: Chain locks, reservations and waiters (:mod:`service.chains`).
    chains: Chains
    #: Watched volumes: statuses and sample histories (:mod:`service.volumes`).
    volumes: VolumeStore

    # --- primitives each backend provides --------------------------------------------

    @abstractmethod
    def get_raw(self, job_id: str) -> dict[Any, Any]:
        """The job's stored hash, or :class:`NotFound`."""

    @abstractmethod
    def get_many(self, ids: Iterable[str]) -> list[Job]:
        """The jobs among ``ids`` that exist, in order."""

    @abstractmethod
    def state_of(self, job_id: str) -> str:
        """The job's state alone ("" when gone)."""

    @abstractmethod
    def _insert(self, job: Job, event: str, webhook: tuple[str, str] | None) -> None:
        """Store a new job with its indexes, first event and webhook, atomically."""

    @abstractmethod
    def _update(self, job_id: str, compute: Callable[[Mapping[Any, Any]], Change]) -> Change:
        """Read the job's hash, ``compute`` the change (it may raise), apply it atomically."""

    @abstractmethod
    def _idem_put(self, key: str, value: str, *, only_new: bool) -> bool:
        """Set an Idempotency-Key record (24 h); ``only_new``: False if it exists."""

    @abstractmethod
    def _idem_get(self, key: str) -> str | None: ...

    @abstractmethod
    def _page(self, kind: str, value: str | None, after: str | None, count: int) -> list[str]:
        """Ids of index ``kind`` (``all``, ``state``, ``host``, ``ref``, ``type``), newest first,
        older than ``after``."""

    def _index_sizes(self, indexes: list[tuple[str, str]]) -> list[int] | None:
        """How many ids each ``(kind, value)`` index holds, or ``None`` when unknown."""
        return None

    @abstractmethod
    def lease(self, job_id: str) -> Lease:
        """The token lease of the job's execution."""

    @abstractmethod
    def events(self, job_id: str, start: int = 0, count: int = 200) -> list[dict[str, Any]]:
        """Events of a job, oldest first, from index ``start``."""

    @abstractmethod
    def add_event(self, job_id: str, ev: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def ids_in_state(self, state: str) -> list[str]: ...

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs per state (for /metrics)."""

    @abstractmethod
    def purge_finished(self, retention_seconds: float, now: float | None = None) -> int:
        """Delete jobs finished more than ``retention_seconds`` ago; returns how many."""

    @abstractmethod
    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""

    @abstractmethod
    def observe_chunk(self, seconds: float, nbytes: int) -> None:
        """One chunk done: bytes processed and a latency histogram sample."""

    @abstractmethod
    def metrics(self) -> tuple[dict[str, int], dict[str, float]]:
        """``(counters, chunk_histogram)``."""

    @abstractmethod
    def notify_progress(self, job_id: str, phase: str) -> None:
        """Tell stream listeners the job's progress was written."""

    @abstractmethod
    def take_turn(self, name: str, seconds: float) -> bool:
        """True for the first caller within ``seconds`` (e.g. the reaper's sweep)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise when the storage is unreachable."""

    def replicate(self) -> int | None:
        """Wait briefly for a replica to hold every write made so far (Redis Sentinel:
        ``WAIT 1``), before acting on them; how many did, ``None`` without replicas."""
        return None

    # webhook outbox
    @abstractmethod
    def queue_delivery(self, delivery_id: str, record: str, at: float) -> None:
        """Queue a delivery that belongs to no job (a volume alert), due at ``at``."""

    @abstractmethod
    def due_deliveries(self, now: float, limit: int) -> list[str]: ...

    @abstractmethod
    def take_delivery(self, delivery_id: str) -> bool:
        """Claim a due delivery (only one worker sends an attempt)."""

    @abstractmethod
    def delivery(self, delivery_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def drop_delivery(self, delivery_id: str) -> None: ...

    @abstractmethod
    def retry_delivery(self, record: Mapping[str, Any], at: float) -> None: ...

    # host registry
    @abstractmethod
    def put_worker(self, host: str, worker: str, record: Mapping[str, str],
                   seconds: float) -> None:
        """Record (or refresh) a live worker for ``seconds``."""

    @abstractmethod
    def drop_worker(self, host: str, worker: str) -> None: ...

    @abstractmethod
    def worker_records(self) -> list[dict[str, str]]:
        """Every live worker's record."""

    # --- the rules --------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job, or :class:`NotFound`."""
        return Job.from_hash(self.get_raw(job_id))

    def create(self, job: Job, *, idempotency: tuple[str, str] | None = None,
               event: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        """Store a new job; returns ``(job, created)``.

        ``idempotency`` is ``(scoped_key, fingerprint)``: a key seen before with the same
        fingerprint returns the job it created; with another fingerprint it is refused.
        """
        if idempotency is not None:
            key, fingerprint = idempotency
            value = json.dumps({"fingerprint": fingerprint, "job_id": job.id,
                                "at": time.time()})
            if not self._idem_put(key, value, only_new=True):
                raw = self._idem_get(key)
                if raw is not None:
                    prior = json.loads(raw)
                    if prior["fingerprint"] != fingerprint:
                        raise IdempotencyMismatch(
                            "this Idempotency-Key was used with a different request body")
                    try:
                        return self.get(prior["job_id"]), False
                    except NotFound:
                        # Key taken but no job: either the first request is still
                        # writing it (a concurrent retry: 409, per the IETF draft), or
                        # it failed or the job was purged long ago (take the key over).
                        if time.time() - float(prior.get("at", 0)) < IDEMPOTENCY_IN_FLIGHT:
                            raise Conflict("a request with this Idempotency-Key is still "
                                           "being processed; retry later") from None
                        self._idem_put(key, value, only_new=False)
        ev = {"type": "state", "to": job.state, **(event or {})}
        self._insert(job, self._event(ev, job.created_at),
                     self._webhook(job, "job.created", job.created_at))
        log.info("job %s created: %s on %s:%s/%s", job.id, job.type, job.host, job.root,
                 job.path)
        return job, True

    @staticmethod
    def _event(ev: Mapping[str, Any], now: float) -> str:
        return json.dumps({"at": iso(now), **ev}, separators=(",", ":"))

    @staticmethod
    def _webhook(job: Job, event_type: str, now: float,
                 sequence: int = 1) -> tuple[str, str] | None:
        """The outbox record of one webhook. ``sequence`` numbers a job's webhooks 1, 2, ...
        in the order of the changes (kept in the job hash's ``webhook_seq``, written in the
        same atomic change): receivers order by it and drop a lower one seen late."""
        if not job.callback:
            return None
        delivery_id = f"msg_{ULID()}"
        payload = {"type": event_type, "timestamp": iso(now), "sequence": sequence,
                   "data": job.to_public()}
        record = {"id": delivery_id, "job_id": job.id, "payload": payload, "attempt": 0,
                  "first_at": now}
        return delivery_id, json.dumps(record, separators=(",", ":"))

    def transition(self, job_id: str, allowed: Iterable[str] | None, new_state: str | None, *,
                   token: str | None = None, set_fields: Mapping[str, Any] | None = None,
                   delete: Iterable[str] = (), event: Mapping[str, Any] | None = None,
                   webhook: str | None = None) -> Job:
        """Atomically move a job from one of ``allowed`` states to ``new_state``.

        ``token`` (an execution's lease token) must still be the job's, else
        :class:`LostLease`. ``new_state=None`` keeps the state (a guarded update). A state
        outside ``allowed``, or a move :data:`service.states.TRANSITIONS` does not list,
        raises :class:`Conflict`. Returns the job as written.
        """
        allowed_set = None if allowed is None else frozenset(allowed)
        fields_ = dict(set_fields or {})
        drop = list(delete)

        def compute(raw: Mapping[Any, Any]) -> Change:
            job = Job.from_hash(raw)
            if token is not None and job.lease_token != token:
                raise LostLease(f"job {job_id} is owned by another execution")
            if allowed_set is not None and job.state not in allowed_set:
                raise Conflict(f"job {job_id} is {job.state}; cannot go to "
                               f"{new_state or 'update'} from there")
            target = job.state if new_state is None else new_state
            if not states.allowed(job.state, target):
                raise Conflict(f"job {job_id} is {job.state}; it cannot become {target}")
            now = time.time()
            values = {**fields_, "updated_at": now, "state": target}
            if target in states.TERMINAL and job.state not in states.TERMINAL:
                values["finished_at"] = now
            nulls = [k for k, v in values.items() if v is None] + drop
            encoded = {k: encode_field(k, v) for k, v in values.items() if v is not None}
            updated = Job.from_hash({**{k.decode() if isinstance(k, bytes) else k: v
                                        for k, v in raw.items()}, **encoded})
            for name in nulls:
                updated = without(updated, name)
            change = Change(job, updated, encoded, nulls)
            if target != job.state:
                change.events.append(self._event(
                    {"type": "state", "from": job.state, "to": target, **(event or {})}, now))
            elif event:
                change.events.append(self._event(event, now))
            hook = webhook or (f"job.{target}" if target != job.state else None)
            if hook and job.callback:
                seq = int(_field(raw, WEBHOOK_SEQ) or 1) + 1  # job.created was 1
                change.values[WEBHOOK_SEQ] = str(seq)
                change.webhook = self._webhook(updated, hook, now, seq)
            return change

        change = self._update(job_id, compute)
        if change.moved:
            log.info("job %s: %s -> %s", job_id, change.job.state, change.updated.state)
        return change.updated

    # --- executions -------------------------------------------------------------------

    def claim(self, job_id: str, token: str, lease_seconds: float, worker: str,
              max_attempts: int) -> tuple[str, Job | None]:
        """Take a job for one execution. Returns ``(outcome, job)``.

        * ``"claimed"``: the lease is ours; a queued job became running, ``attempts`` + 1.
        * ``"busy"``: a live lease is held by another execution (a redelivered message while
          the first run goes on): do nothing.
        * ``"skip"``: the job is paused or finished (or gone): nothing to run.
        * ``"exhausted"``: too many attempts; the job was failed.
        """
        try:
            job = self.get(job_id)
        except NotFound:
            return "skip", None
        lease = self.lease(job_id)
        if not lease.acquire(token, lease_seconds):
            return "busy", job
        if job.state not in states.CLAIMABLE:
            lease.release(token)
            return "skip", job
        if job.attempts >= max_attempts:
            failed = self.transition(
                job_id, None, states.FAILED, delete=["lease_token"],
                set_fields={"error": {"type": "too_many_attempts", "title": "Gave up",
                                      "detail": f"{job.attempts} executions did not finish"
                                                " (worker crashes?)"}})
            lease.release(token)
            return "exhausted", failed
        try:
            # Guarded by the state read above: a cancel or pause that lands between the
            # read and this write must not be overwritten (the job revived).
            claimed = self.transition(
                job_id, [job.state], states.on_claim(job.state), set_fields={
                    "lease_token": token, "attempts": job.attempts + 1, "worker": worker,
                    "reason": None, "started_at": job.started_at or time.time()},
                event={"type": "attempt", "attempt": job.attempts + 1, "worker": worker})
        except (Conflict, NotFound):
            lease.release(token)
            return "skip", None
        return "claimed", claimed

    def renew_lease(self, job_id: str, token: str, lease_seconds: float) -> bool:
        """Extend our lease; False when it is gone or another execution holds it."""
        return self.lease(job_id).renew(token, lease_seconds)

    def release_lease(self, job_id: str, token: str) -> None:
        """Drop our lease (compare-and-delete) so a later execution may claim at once."""
        self.lease(job_id).release(token)

    def lease_alive(self, job_id: str) -> bool:
        return self.lease(job_id).alive()

    # --- reads ------------------------------------------------------------------------

    def find(self, *, state: str | None = None, host: str | None = None,
             external_ref: str | None = None, type: str | None = None, limit: int = 50,
             page_token: str | None = None) -> tuple[list[Job], str | None]:
        """Newest first, filtered; returns ``(jobs, next_page_token)``.

        The smallest index among the filters given drives the scan (by ``_index_sizes``;
        without sizes: ref, then host, then state, then type); the other filters are
        applied to the records read.
        """
        wanted = {"ref": external_ref, "host": host, "state": state, "type": type}
        given = [(k, v) for k, v in wanted.items() if v is not None]
        kind: str
        value: str | None
        if not given:
            kind, value = "all", None
        else:
            sizes = self._index_sizes(given) if len(given) > 1 else None
            order = (range(len(given)) if sizes is None
                     else sorted(range(len(given)), key=lambda i: sizes[i]))
            kind, value = given[next(iter(order))]
        after = decode_page_token(page_token) if page_token else None
        out: list[Job] = []
        batch = max(limit, 50)
        while len(out) < limit:
            ids = self._page(kind, value, after, batch)
            if not ids:
                return out, None
            for job in self.get_many(ids):
                if ((state is None or job.state == state) and (host is None or job.host == host)
                        and (external_ref is None or job.external_ref == external_ref)
                        and (type is None or job.type == type)):
                    out.append(job)
                    if len(out) == limit:
                        break
            after = out[-1].id if len(out) == limit else ids[-1]
            if len(ids) < batch and len(out) < limit:
                return out, None
        return out, encode_page_token(out[-1].id)
