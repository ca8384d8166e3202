"""The job store on Redis: the only code that names Redis keys (with :mod:`service.keys`).

Every write that must not race (state transitions, writes by an execution) is an optimistic
transaction (WATCH/MULTI); leases and chain locks are token leases (Lua).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import redis

from service import redisconn
from service.chains import RedisChains
from service.config import Settings
from service.errors import EnvironmentFault, NotFound
from service.job import CHUNK_BUCKETS, MAX_EVENTS, Job, text
from service.keys import Keys
from service.lease import RedisLease
from service.states import STATES, TERMINAL
from service.store.base import Change, JobStore
from service.volumes.redis_store import RedisVolumeStore

log = logging.getLogger(__name__)

T = TypeVar("T")

def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings``: one server or the Sentinels' current master
    (:func:`service.redisconn.client`, the one place clients are built)."""
    return redisconn.client(settings)


#: Jobs read per step when indexing stored jobs by type.
TYPE_BACKFILL_BATCH = 500

#: KEYS: job hashes; ARGV[1]: the type index name less the type; ARGV[2..]: their ids.
_BACKFILL_TYPE = """
local n = 0
for i, key in ipairs(KEYS) do
  local t = redis.call('HGET', key, 'type')
  if t then
    redis.call('ZADD', ARGV[1] .. t, 0, ARGV[i + 1])
    n = n + 1
  end
end
return n
"""

#: Idempotency-Key records are kept this long.
IDEMPOTENCY_SECONDS = 24 * 3600


class RedisJobStore(JobStore):
    """Jobs, their events, leases, idempotency keys and counters in one Redis."""

    def __init__(self, client: redis.Redis, *, prefix: str = "vhdmend",
                 retry_seconds: float = 0.0, webhook_progress_step: int = 0) -> None:
        self.r = client
        self.p = prefix
        self.keys = Keys(prefix)
        self.retry_seconds = retry_seconds
        self.webhook_progress_step = webhook_progress_step
        self.chains = RedisChains(client, self.keys)
        self.volumes = RedisVolumeStore(client, self.keys)
        self._type_indexed = False
        self._backfill = client.register_script(_BACKFILL_TYPE)

    # Key names, for tests and tools that look at Redis directly.
    def k_job(self, job_id: str) -> str:
        return self.keys.job(job_id)

    def k_events(self, job_id: str) -> str:
        return self.keys.events(job_id)

    def k_lease(self, job_id: str) -> str:
        return self.keys.lease(job_id)

    # --- resilience -------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; on a lost connection retry for ``retry_seconds`` (Redis restarting)."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.1
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                if time.monotonic() >= deadline:
                    raise EnvironmentFault(f"Redis unavailable: {e}") from e
                log.warning("Redis unavailable (%s); retrying in %.1fs", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # --- jobs -------------------------------------------------------------------------

    def _indexes(self, job: Job) -> list[str]:
        k = self.keys
        out = [k.idx("all"), k.idx("state", job.state), k.idx("host", job.host),
               k.idx("type", job.type)]
        if job.external_ref:
            out.append(k.idx("ref", job.external_ref))
        return out

    def _insert(self, job: Job, event: str, webhook: tuple[str, str] | None) -> None:
        def write() -> None:
            pipe = self.r.pipeline(transaction=True)
            mapping: dict[Any, Any] = job.to_hash()
            pipe.hset(self.keys.job(job.id), mapping=mapping)
            for idx in self._indexes(job):
                pipe.zadd(idx, {job.id: 0})
            pipe.rpush(self.keys.events(job.id), event)
            self._queue_webhook(pipe, webhook, job.created_at)
            pipe.hincrby(self.keys.metrics, "jobs_created", 1)
            pipe.execute()
        self._call(write)

    def _queue_webhook(self, pipe: Any, webhook: tuple[str, str] | None, now: float) -> None:
        if webhook is not None:
            delivery_id, record = webhook
            pipe.set(self.keys.webhook(delivery_id), record)
            pipe.zadd(self.keys.webhooks_due, {delivery_id: now})

    def _update(self, job_id: str, compute: Callable[[Mapping[Any, Any]], Change]) -> Change:
        key = self.keys.job(job_id)

        def attempt() -> Change:
            while True:
                with self.r.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        raw: Any = pipe.hgetall(key)
                        if not raw:
                            raise NotFound(f"no job {job_id}")
                        change = compute(raw)
                        pipe.multi()
                        self._apply(pipe, change)
                        pipe.execute()
                        return change
                    except redis.WatchError:
                        continue
        return self._call(attempt)

    def _apply(self, pipe: Any, change: Change) -> None:
        k, job_id = self.keys, change.job.id
        pipe.hset(k.job(job_id), mapping=change.values)
        if change.nulls:
            pipe.hdel(k.job(job_id), *change.nulls)
        if change.moved:
            pipe.zrem(k.idx("state", change.job.state), job_id)
            pipe.zadd(k.idx("state", change.updated.state), {job_id: 0})
            if change.updated.state in TERMINAL:
                pipe.zadd(k.finished, {job_id: change.updated.updated_at})
                pipe.hincrby(k.metrics, f"jobs_{change.updated.state}", 1)
        if change.events:
            pipe.rpush(k.events(job_id), *change.events)
            pipe.ltrim(k.events(job_id), -MAX_EVENTS, -1)
        self._queue_webhook(pipe, change.webhook, change.updated.updated_at)

    def get_raw(self, job_id: str) -> dict[Any, Any]:
        """The job's Redis hash as stored (one HGETALL), or :class:`NotFound`."""
        raw = self._call(lambda: self.r.hgetall(self.keys.job(job_id)))
        if not raw:
            raise NotFound(f"no job {job_id}")
        return dict(raw)

    def state_of(self, job_id: str) -> str:
        """The job's state alone (one HGET), retried like every read while Redis restarts."""
        raw = self._call(lambda: self.r.hget(self.keys.job(job_id), "state"))
        return text(raw) if raw is not None else ""

    def get_many(self, ids: Iterable[str]) -> list[Job]:
        ids = list(ids)

        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            return pipe.execute()
        return [Job.from_hash(raw) for raw in self._call(read) if raw]

    def _idem_put(self, key: str, value: str, *, only_new: bool) -> bool:
        return bool(self._call(lambda: self.r.set(self.keys.idem(key), value, nx=only_new,
                                                  ex=IDEMPOTENCY_SECONDS)))

    def _idem_get(self, key: str) -> str | None:
        raw = self._call(lambda: self.r.get(self.keys.idem(key)))
        return None if raw is None else text(raw)

    def _page(self, kind: str, value: str | None, after: str | None, count: int) -> list[str]:
        if kind == "type":
            self._ensure_type_index()
        hi = f"({after}" if after else "+"
        page: Any = self._call(partial(self.r.zrevrangebylex, self.keys.idx(kind, value), hi,
                                       "-", start=0, num=count))
        return [text(i) for i in page]

    def _index_sizes(self, indexes: list[tuple[str, str]]) -> list[int] | None:
        if any(kind == "type" for kind, _ in indexes):
            self._ensure_type_index()

        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for kind, value in indexes:
                pipe.zcard(self.keys.idx(kind, value))
            return pipe.execute()
        return [int(n) for n in self._call(read)]

    def _ensure_type_index(self) -> None:
        """Index the jobs stored before the per-type index existed (once per Redis)."""
        if self._type_indexed:
            return
        marker = self.keys.migrated("type-index")
        if not self._call(lambda: self.r.exists(marker)):
            after, n = "", 0
            while True:
                ids = [text(i) for i in self._call(partial(
                    self.r.zrangebylex, self.keys.idx("all"), f"({after}" if after else "-",
                    "+", start=0, num=TYPE_BACKFILL_BATCH))]
                if not ids:
                    break
                # One script per batch: atomic against a purge (no id of a deleted job
                # re-enters an index), and the key names still come from Keys.
                n += int(self._call(partial(self._backfill,
                                            keys=[self.keys.job(i) for i in ids],
                                            args=[self.keys.idx("type", ""), *ids])))
                after = ids[-1]
            self._call(lambda: self.r.set(marker, "1"))
            log.info("indexed %d stored jobs by type", n)
        self._type_indexed = True

    def lease(self, job_id: str) -> RedisLease:
        return RedisLease(self.r, self.keys.lease(job_id))

    def renew_lease(self, job_id: str, token: str, lease_seconds: float) -> bool:
        return self._call(lambda: super(RedisJobStore, self).renew_lease(job_id, token,
                                                                          lease_seconds))

    def release_lease(self, job_id: str, token: str) -> None:
        self._call(lambda: super(RedisJobStore, self).release_lease(job_id, token))

    def lease_alive(self, job_id: str) -> bool:
        return bool(self._call(lambda: self.r.exists(self.keys.lease(job_id))))

    def events(self, job_id: str, start: int = 0, count: int = 200) -> list[dict[str, Any]]:
        self.get_raw(job_id)
        raw = self._call(lambda: self.r.lrange(self.keys.events(job_id), start,
                                               start + count - 1))
        return [json.loads(x) for x in raw]

    def add_event(self, job_id: str, ev: Mapping[str, Any]) -> None:
        def write() -> None:
            pipe = self.r.pipeline(transaction=False)
            pipe.rpush(self.keys.events(job_id), self._event(ev, time.time()))
            pipe.ltrim(self.keys.events(job_id), -MAX_EVENTS, -1)
            pipe.execute()
        self._call(write)

    # --- maintenance ------------------------------------------------------------------

    def ids_in_state(self, state: str) -> list[str]:
        return [text(i) for i in
                self._call(lambda: self.r.zrange(self.keys.idx("state", state), 0, -1))]

    def counts(self) -> dict[str, int]:
        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for s in STATES:
                pipe.zcard(self.keys.idx("state", s))
            return pipe.execute()
        return dict(zip(STATES, (int(n) for n in self._call(read)), strict=True))

    def purge_finished(self, retention_seconds: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        old = self._call(lambda: self.r.zrangebyscore(self.keys.finished, "-inf",
                                                      now - retention_seconds, start=0, num=500))
        n = 0
        for raw_id in old:
            job_id = text(raw_id)
            try:
                job: Job | None = self.get(job_id)
            except NotFound:
                job = None
            pipe = self.r.pipeline(transaction=True)
            if job is not None:
                for idx in self._indexes(job):
                    pipe.zrem(idx, job_id)
            pipe.delete(self.keys.job(job_id), self.keys.events(job_id))
            pipe.zrem(self.keys.finished, job_id)
            self._call(pipe.execute)
            n += 1
        if n:
            log.info("retention: purged %d finished jobs", n)
        return n

    def take_turn(self, name: str, seconds: float) -> bool:
        key = self.keys.turn(name)
        return bool(self._call(lambda: self.r.set(key, "1", nx=True,
                                                  px=max(1, int(seconds * 1000)))))

    def ping(self) -> None:
        self.r.ping()

    def replicate(self) -> int | None:
        return self._call(lambda: redisconn.wait_for_replica(self.r))

    def notify_progress(self, job_id: str, phase: str) -> None:
        self._call(lambda: self.r.publish(self.keys.progress(job_id), phase))

    # --- metrics ----------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self._call(lambda: self.r.hincrby(self.keys.metrics, name, n))

    def observe_chunk(self, seconds: float, nbytes: int) -> None:
        def write() -> None:
            pipe = self.r.pipeline(transaction=False)
            pipe.hincrby(self.keys.metrics, "bytes_processed", nbytes)
            for le in CHUNK_BUCKETS:
                if seconds <= le:
                    pipe.hincrby(self.keys.chunk_histogram, str(le), 1)
            pipe.hincrby(self.keys.chunk_histogram, "+Inf", 1)
            pipe.hincrbyfloat(self.keys.chunk_histogram, "sum", seconds)
            pipe.execute()
        self._call(write)

    def metrics(self) -> tuple[dict[str, int], dict[str, float]]:
        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.keys.metrics)
            pipe.hgetall(self.keys.chunk_histogram)
            return pipe.execute()
        counters, hist = self._call(read)
        return ({text(k): int(v) for k, v in counters.items()},
                {text(k): float(v) for k, v in hist.items()})

    # --- webhook outbox ---------------------------------------------------------------

    def queue_delivery(self, delivery_id: str, record: str, at: float) -> None:
        pipe = self.r.pipeline(transaction=True)
        self._queue_webhook(pipe, (delivery_id, record), at)
        pipe.execute()

    def due_deliveries(self, now: float, limit: int) -> list[str]:
        ids: Any = self.r.zrangebyscore(self.keys.webhooks_due, "-inf", now, start=0, num=limit)
        return [text(i) for i in ids]

    def take_delivery(self, delivery_id: str) -> bool:
        # ZREM is the claim: only the worker that removed it sends this attempt.
        return bool(self.r.zrem(self.keys.webhooks_due, delivery_id))

    def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        raw: Any = self.r.get(self.keys.webhook(delivery_id))
        return None if raw is None else dict(json.loads(raw))

    def drop_delivery(self, delivery_id: str) -> None:
        self.r.delete(self.keys.webhook(delivery_id))

    def retry_delivery(self, record: Mapping[str, Any], at: float) -> None:
        delivery_id = str(record["id"])
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.webhook(delivery_id), json.dumps(record, separators=(",", ":")))
        pipe.zadd(self.keys.webhooks_due, {delivery_id: at})
        pipe.execute()

    # --- host registry ----------------------------------------------------------------

    def put_worker(self, host: str, worker: str, record: Mapping[str, str],
                   seconds: float) -> None:
        key = self.keys.worker(host, worker)
        pipe = self.r.pipeline(transaction=False)
        mapping: dict[Any, Any] = dict(record)
        pipe.hset(key, mapping=mapping)
        pipe.pexpire(key, max(1, int(seconds * 1000)))
        pipe.sadd(self.keys.workers, key)
        pipe.execute()

    def drop_worker(self, host: str, worker: str) -> None:
        key = self.keys.worker(host, worker)
        self.r.delete(key)
        self.r.srem(self.keys.workers, key)

    def worker_records(self) -> list[dict[str, str]]:
        members: Any = self.r.smembers(self.keys.workers)
        keys = sorted(text(k) for k in members)
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        out = []
        for k, raw in zip(keys, pipe.execute(), strict=True):
            if not raw:
                self.r.srem(self.keys.workers, k)   # expired: drop it from the index
                continue
            out.append({text(a): text(b) for a, b in raw.items()})
        return out
