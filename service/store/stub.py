"""An in-memory job store for fast tests: the same rules (they live in
:class:`~service.store.base.JobStore`), dicts instead of Redis, one lock for atomicity."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from service.chains import ChainLock, Chains
from service.errors import NotFound
from service.job import CHUNK_BUCKETS, MAX_EVENTS, Job
from service.lease import Lease
from service.states import STATES, TERMINAL
from service.store.base import Change, JobStore
from service.volumes.store import StubVolumeStore

Clock = Callable[[], float]


class StubLease(Lease):
    """A token lease in a dict, expiring by ``clock``; ``fences`` counts acquisitions."""

    def __init__(self, table: dict[str, tuple[str, float, str]], key: str, clock: Clock,
                 lock: threading.RLock, fences: dict[str, int] | None = None) -> None:
        self.table, self.key, self.clock, self._lock = table, key, clock, lock
        self.fences = fences

    def _live(self) -> tuple[str, float, str] | None:
        entry = self.table.get(self.key)
        if entry is not None and entry[1] <= self.clock():
            del self.table[self.key]
            return None
        return entry

    def acquire(self, token: str, seconds: float, value: str = "") -> int:
        with self._lock:
            if self._live() is not None:
                return 0
            self.table[self.key] = (token, self.clock() + seconds, value)
            if self.fences is None:
                return 1
            self.fences[self.key] = self.fences.get(self.key, 0) + 1
            return self.fences[self.key]

    def renew(self, token: str, seconds: float) -> bool:
        with self._lock:
            entry = self._live()
            if entry is None or entry[0] != token:
                return False
            self.table[self.key] = (token, self.clock() + seconds, entry[2])
            return True

    def release(self, token: str) -> bool:
        with self._lock:
            entry = self._live()
            if entry is None or entry[0] != token:
                return False
            del self.table[self.key]
            return True

    def owner(self) -> str | None:
        with self._lock:
            entry = self._live()
            return None if entry is None else entry[0]

    def value(self) -> str | None:
        with self._lock:
            entry = self._live()
            return None if entry is None else entry[2]


class StubChains(Chains):
    """Chain locks, reservations and waiters in memory."""

    def __init__(self, clock: Clock, lock: threading.RLock) -> None:
        self.clock, self._lock = clock, lock
        self.leases: dict[str, tuple[str, float, str]] = {}
        self.fences: dict[str, int] = {}
        self.reserved: dict[str, str] = {}
        self.waiters: dict[str, set[str]] = {}

    def lock(self, identity: str, lease_seconds: float) -> ChainLock:
        lease = StubLease(self.leases, identity, self.clock, self._lock, self.fences)

        def raise_to(token: str, floor: int) -> int:
            with self._lock:
                if lease.owner() != token:
                    return 0
                self.fences[identity] = max(self.fences.get(identity, 0), floor + 1)
                return self.fences[identity]
        return ChainLock(lease, identity, lease_seconds=lease_seconds,
                         fence=lambda: self.fences.get(identity, 0), holder=lease.value,
                         raise_to=raise_to)

    def reserved_by(self, identity: str) -> str | None:
        return self.reserved.get(identity)

    def reserve(self, identity: str, job_id: str) -> None:
        self.reserved[identity] = job_id

    def unreserve(self, identity: str, job_id: str) -> None:
        with self._lock:
            if self.reserved.get(identity) == job_id:
                del self.reserved[identity]

    def add_waiter(self, identity: str, job_id: str) -> None:
        with self._lock:
            self.waiters.setdefault(identity, set()).add(job_id)

    def take_waiters(self, identity: str) -> list[str]:
        with self._lock:
            return sorted(self.waiters.pop(identity, set()))


class StubJobStore(JobStore):
    """Everything a :class:`JobStore` keeps, in this process's memory."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self.jobs: dict[str, dict[str, str]] = {}
        self.event_lists: dict[str, list[str]] = {}
        self.leases: dict[str, tuple[str, float, str]] = {}
        self.idempotency: dict[str, str] = {}
        self.finished: dict[str, float] = {}
        self.counters: dict[str, int] = {}
        self.histogram: dict[str, float] = {}
        self.outbox: dict[str, dict[str, Any]] = {}
        self.due: dict[str, float] = {}
        self.turns: dict[str, float] = {}
        self.hosts: dict[tuple[str, str], tuple[dict[str, str], float]] = {}
        self.published: list[tuple[str, str]] = []
        self.chains = StubChains(clock, self._lock)
        self.volumes = StubVolumeStore()

    def get_raw(self, job_id: str) -> dict[Any, Any]:
        with self._lock:
            if job_id not in self.jobs:
                raise NotFound(f"no job {job_id}")
            return dict(self.jobs[job_id])

    def get_many(self, ids: Iterable[str]) -> list[Job]:
        with self._lock:
            return [Job.from_hash(self.jobs[i]) for i in ids if i in self.jobs]

    def state_of(self, job_id: str) -> str:
        with self._lock:
            return self.jobs.get(job_id, {}).get("state", "")

    def _insert(self, job: Job, event: str, webhook: tuple[str, str] | None) -> None:
        with self._lock:
            self.jobs[job.id] = job.to_hash()
            self.event_lists[job.id] = [event]
            self._queue(webhook, job.created_at)
            self.counters["jobs_created"] = self.counters.get("jobs_created", 0) + 1

    def _queue(self, webhook: tuple[str, str] | None, now: float) -> None:
        if webhook is not None:
            self.outbox[webhook[0]] = json.loads(webhook[1])
            self.due[webhook[0]] = now

    def _update(self, job_id: str, compute: Callable[[Mapping[Any, Any]], Change]) -> Change:
        with self._lock:
            if job_id not in self.jobs:
                raise NotFound(f"no job {job_id}")
            change = compute(dict(self.jobs[job_id]))
            record = self.jobs[job_id]
            record.update(change.values)
            for name in change.nulls:
                record.pop(name, None)
            if change.moved and change.updated.state in TERMINAL:
                self.finished[job_id] = change.updated.updated_at
                name = f"jobs_{change.updated.state}"
                self.counters[name] = self.counters.get(name, 0) + 1
            events = self.event_lists.setdefault(job_id, [])
            events.extend(change.events)
            del events[:-MAX_EVENTS]
            self._queue(change.webhook, change.updated.updated_at)
            return change

    def _idem_put(self, key: str, value: str, *, only_new: bool) -> bool:
        with self._lock:
            if only_new and key in self.idempotency:
                return False
            self.idempotency[key] = value
            return True

    def _idem_get(self, key: str) -> str | None:
        return self.idempotency.get(key)

    def _page(self, kind: str, value: str | None, after: str | None, count: int) -> list[str]:
        field = {"state": "state", "host": "host", "ref": "external_ref",
                 "type": "type"}.get(kind)
        with self._lock:
            ids = sorted((i for i, h in self.jobs.items()
                          if field is None or h.get(field) == value), reverse=True)
        return [i for i in ids if after is None or i < after][:count]

    def lease(self, job_id: str) -> StubLease:
        return StubLease(self.leases, job_id, self.clock, self._lock)

    def events(self, job_id: str, start: int = 0, count: int = 200) -> list[dict[str, Any]]:
        self.get_raw(job_id)
        return [json.loads(e) for e in self.event_lists.get(job_id, [])[start:start + count]]

    def add_event(self, job_id: str, ev: Mapping[str, Any]) -> None:
        with self._lock:
            events = self.event_lists.setdefault(job_id, [])
            events.append(self._event(ev, self.clock()))
            del events[:-MAX_EVENTS]

    def ids_in_state(self, state: str) -> list[str]:
        with self._lock:
            return sorted(i for i, h in self.jobs.items() if h.get("state") == state)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {s: sum(1 for h in self.jobs.values() if h.get("state") == s)
                    for s in STATES}

    def purge_finished(self, retention_seconds: float, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        with self._lock:
            old = [i for i, at in self.finished.items() if at <= now - retention_seconds]
            for job_id in old:
                self.jobs.pop(job_id, None)
                self.event_lists.pop(job_id, None)
                del self.finished[job_id]
        return len(old)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def observe_chunk(self, seconds: float, nbytes: int) -> None:
        with self._lock:
            self.count("bytes_processed", nbytes)
            for le in (*[str(b) for b in CHUNK_BUCKETS if seconds <= b], "+Inf"):
                self.histogram[le] = self.histogram.get(le, 0.0) + 1
            self.histogram["sum"] = self.histogram.get("sum", 0.0) + seconds

    def metrics(self) -> tuple[dict[str, int], dict[str, float]]:
        with self._lock:
            return dict(self.counters), dict(self.histogram)

    def notify_progress(self, job_id: str, phase: str) -> None:
        self.published.append((job_id, phase))

    def take_turn(self, name: str, seconds: float) -> bool:
        with self._lock:
            if self.turns.get(name, 0.0) > self.clock():
                return False
            self.turns[name] = self.clock() + seconds
            return True

    def ping(self) -> None:
        return None

    def queue_delivery(self, delivery_id: str, record: str, at: float) -> None:
        with self._lock:
            self._queue((delivery_id, record), at)

    def due_deliveries(self, now: float, limit: int) -> list[str]:
        with self._lock:
            return sorted((i for i, at in self.due.items() if at <= now),
                          key=lambda i: self.due[i])[:limit]

    def take_delivery(self, delivery_id: str) -> bool:
        with self._lock:
            return self.due.pop(delivery_id, None) is not None

    def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        record = self.outbox.get(delivery_id)
        return None if record is None else copy.deepcopy(record)

    def drop_delivery(self, delivery_id: str) -> None:
        self.outbox.pop(delivery_id, None)

    def retry_delivery(self, record: Mapping[str, Any], at: float) -> None:
        with self._lock:
            self.outbox[str(record["id"])] = copy.deepcopy(dict(record))
            self.due[str(record["id"])] = at

    def put_worker(self, host: str, worker: str, record: Mapping[str, str],
                   seconds: float) -> None:
        self.hosts[(host, worker)] = (dict(record), self.clock() + seconds)

    def drop_worker(self, host: str, worker: str) -> None:
        self.hosts.pop((host, worker), None)

    def worker_records(self) -> list[dict[str, str]]:
        now = self.clock()
        return [dict(rec) for (_, _), (rec, until) in sorted(self.hosts.items())
                if until > now]
