"""The job record in Redis: the source of truth for every job (the broker is only a nudge).

Layout (``P`` is the configured prefix)::

    P:job:{id}            hash, one field per Job attribute (dicts JSON-encoded)
    P:job:{id}:events     list of JSON events (state changes, attempts, webhooks), capped
    P:idx:all             zset, every job id (score 0: ordered by id, i.e. ULID = time)
    P:idx:state:{s}       zset per state, P:idx:host:{h}, P:idx:ref:{external_ref}
    P:finished            zset id -> finished_at, for retention
    P:lease:{id}          the live execution's token, with a TTL (see :meth:`JobStore.claim`)
    P:idem:{who}:{key}    Idempotency-Key -> request fingerprint and job id (24 h)
    P:wh:due, P:wh:{id}   webhook deliveries due (see :mod:`workers.webhooks`)
    P:metrics             hash of counters; P:metrics:chunk histogram of chunk latency

Every write that must not race (state transitions, writes by an execution) is an optimistic
transaction (WATCH/MULTI): it works on Redis and on fakeredis alike, without Lua.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, TypeVar

import redis
from ulid import ULID

from workers.errors import (
    ClientError,
    Conflict,
    EnvironmentFault,
    IdempotencyMismatch,
    LostLease,
    NotFound,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

STATES = ("queued", "running", "pausing", "paused", "cancelling", "succeeded", "failed",
          "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = frozenset({"running", "pausing", "cancelling"})
JOB_TYPES = ("inspect", "plan", "merge", "compact", "convert", "remediate")
#: Seconds an Idempotency-Key without its job yet counts as a request in flight.
IDEMPOTENCY_IN_FLIGHT = 30.0
#: Events kept per job (oldest dropped first).
MAX_EVENTS = 1000
#: Chunk latency histogram buckets, seconds (Prometheus ``le``).
CHUNK_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

_JSON_FIELDS = frozenset({"options", "progress", "plan", "result", "error", "checkpoint",
                          "callback"})
_INT_FIELDS = frozenset({"attempts", "fence", "chunks"})
_FLOAT_FIELDS = frozenset({"created_at", "updated_at", "started_at", "finished_at"})


@dataclass(frozen=True)
class Job:
    """One job as stored. Build new ones with :func:`new_job`; never mutate, replace."""

    id: str
    type: str
    host: str
    root: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    state: str = "queued"
    phase: str | None = None
    #: ``{done, total, percent, rate, eta_seconds}`` (bytes, bytes/s, seconds).
    progress: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    attempts: int = 0
    #: Checkpoints made over all executions (each after one chunk of I/O).
    chunks: int = 0
    #: ``{type, title, detail}``.
    error: dict[str, Any] | None = None
    external_ref: str | None = None
    requested_by: str | None = None
    #: ``{url, secret}``; the secret is never shown by the API.
    callback: dict[str, Any] | None = None
    #: Why a queued job is not running yet (e.g. waiting for a chain lock).
    reason: str | None = None
    checkpoint: dict[str, Any] | None = None
    fence: int | None = None
    worker: str | None = None
    lease_token: str | None = None
    lock_key: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_hash(self) -> dict[str, str]:
        """Redis hash fields (``None`` attributes are left out)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = encode_field(f.name, value)
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> Job:
        """Decode a Redis hash (bytes or str keys and values)."""
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            if key in known:
                kw[key] = decode_field(key, v.decode() if isinstance(v, bytes) else v)
        return cls(**kw)

    def to_public(self) -> dict[str, Any]:
        """The JSON view the API and webhooks show: no secret, no lease token."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)
                             if f.name not in ("lease_token", "checkpoint", "callback")}
        d["callback"] = {"url": self.callback["url"]} if self.callback else None
        d["checkpoint"] = self.checkpoint is not None
        for key in _FLOAT_FIELDS:
            d[key] = iso(d[key]) if d[key] else None
        return d


#: Fields of :meth:`Job.to_public`, in its order (``callback`` and ``checkpoint`` last).
_PUBLIC = tuple(f.name for f in fields(Job)
                if f.name not in ("lease_token", "checkpoint", "callback"))


def public_json(raw: Mapping[bytes | str, bytes | str]) -> bytes:
    """``json.dumps(Job.from_hash(raw).to_public())`` without building the Job.

    The status poll is the hottest path of the service (see bench/service): the JSON
    fields are stored as JSON text, so they are spliced in as they are instead of being
    decoded and encoded again; only strings are escaped and timestamps formatted.
    """
    h = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    parts: list[str] = []
    for name in _PUBLIC:
        v = h.get(name)
        if v is None:
            value = "0" if name in _INT_FIELDS and name != "fence" else "null"
        else:
            text = v.decode() if isinstance(v, bytes) else v
            if name in _JSON_FIELDS:
                value = text
            elif name in _INT_FIELDS:
                value = str(int(text))
            elif name in _FLOAT_FIELDS:
                value = f'"{iso(float(text))}"' if float(text) else "null"
            else:
                value = json.dumps(text)
        parts.append(f'"{name}":{value}')
    cb = h.get("callback")
    url = json.loads(cb).get("url") if cb else None
    parts.append('"callback":' + ("null" if not cb else json.dumps({"url": url})))
    parts.append('"checkpoint":' + ("true" if h.get("checkpoint") is not None else "false"))
    return ("{" + ",".join(parts) + "}").encode()


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(ts * 1000) % 1000:03d}Z"


def encode_field(name: str, value: Any) -> str:
    if name in _JSON_FIELDS:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if name in _FLOAT_FIELDS:
        return repr(float(value))
    return str(value)


def decode_field(name: str, raw: str) -> Any:
    if name in _JSON_FIELDS:
        return json.loads(raw)
    if name in _INT_FIELDS:
        return int(raw)
    if name in _FLOAT_FIELDS:
        return float(raw)
    return raw


def new_job(type: str, host: str, root: str, path: str, *,
            options: Mapping[str, Any] | None = None, external_ref: str | None = None,
            requested_by: str | None = None, callback: Mapping[str, Any] | None = None,
            now: float | None = None) -> Job:
    """A fresh queued job with a new ULID."""
    now = time.time() if now is None else now
    return Job(id=str(ULID()), type=type, host=host, root=root, path=path,
               options=dict(options or {}), external_ref=external_ref,
               requested_by=requested_by, callback=dict(callback) if callback else None,
               created_at=now, updated_at=now)


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        ULID.from_str(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as e:
        raise ClientError("page_token is not valid") from e
    return raw


class JobStore:
    """Jobs, their events, leases, idempotency keys and counters in one Redis."""

    def __init__(self, client: redis.Redis, *, prefix: str = "vhdmend",
                 retry_seconds: float = 0.0, webhook_progress_step: int = 0) -> None:
        self.r = client
        self.p = prefix
        self.retry_seconds = retry_seconds
        self.webhook_progress_step = webhook_progress_step

    # --- keys -------------------------------------------------------------------------

    def k_job(self, job_id: str) -> str:
        return f"{self.p}:job:{job_id}"

    def k_events(self, job_id: str) -> str:
        return f"{self.p}:job:{job_id}:events"

    def k_lease(self, job_id: str) -> str:
        return f"{self.p}:lease:{job_id}"

    def k_idx(self, kind: str, value: str | None = None) -> str:
        return f"{self.p}:idx:{kind}" if value is None else f"{self.p}:idx:{kind}:{value}"

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

    # --- create / read ----------------------------------------------------------------

    def create(self, job: Job, *, idempotency: tuple[str, str] | None = None,
               event: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        """Store a new job; returns ``(job, created)``.

        ``idempotency`` is ``(scoped_key, fingerprint)``: a key seen before with the same
        fingerprint returns the job it created; with another fingerprint it is refused.
        """
        if idempotency is not None:
            key, fingerprint = idempotency
            k = f"{self.p}:idem:{key}"
            value = json.dumps({"fingerprint": fingerprint, "job_id": job.id,
                                "at": time.time()})
            if not self._call(lambda: self.r.set(k, value, nx=True, ex=24 * 3600)):
                raw = self._call(lambda: self.r.get(k))
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
                        self.r.set(k, value, ex=24 * 3600)
        ev = {"type": "state", "to": job.state, **(event or {})}

        def write() -> None:
            pipe = self.r.pipeline(transaction=True)
            mapping: dict[Any, Any] = job.to_hash()
            pipe.hset(self.k_job(job.id), mapping=mapping)
            for idx in self._indexes(job):
                pipe.zadd(idx, {job.id: 0})
            pipe.rpush(self.k_events(job.id), self._event(ev, job.created_at))
            self._queue_webhook(pipe, job, "job.created", job.created_at)
            pipe.hincrby(f"{self.p}:metrics", "jobs_created", 1)
            pipe.execute()
        self._call(write)
        log.info("job %s created: %s on %s:%s/%s", job.id, job.type, job.host, job.root,
                 job.path)
        return job, True

    def _indexes(self, job: Job) -> list[str]:
        out = [self.k_idx("all"), self.k_idx("state", job.state), self.k_idx("host", job.host)]
        if job.external_ref:
            out.append(self.k_idx("ref", job.external_ref))
        return out

    @staticmethod
    def _event(ev: Mapping[str, Any], now: float) -> str:
        return json.dumps({"at": iso(now), **ev}, separators=(",", ":"))

    def get(self, job_id: str) -> Job:
        """The job, or :class:`NotFound`."""
        raw = self._call(lambda: self.r.hgetall(self.k_job(job_id)))
        if not raw:
            raise NotFound(f"no job {job_id}")
        return Job.from_hash(raw)

    def state_of(self, job_id: str) -> str:
        """The job's state alone (one HGET), retried like every read while Redis restarts."""
        raw = self._call(lambda: self.r.hget(self.k_job(job_id), "state"))
        return _s(raw) if raw is not None else ""

    def get_raw(self, job_id: str) -> dict[Any, Any]:
        """The job's Redis hash as stored (one HGETALL), or :class:`NotFound`."""
        raw = self._call(lambda: self.r.hgetall(self.k_job(job_id)))
        if not raw:
            raise NotFound(f"no job {job_id}")
        return dict(raw)

    def get_many(self, ids: Iterable[str]) -> list[Job]:
        ids = list(ids)

        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self.k_job(job_id))
            return pipe.execute()
        return [Job.from_hash(raw) for raw in self._call(read) if raw]

    def find(self, *, state: str | None = None, host: str | None = None,
             external_ref: str | None = None, limit: int = 50,
             page_token: str | None = None) -> tuple[list[Job], str | None]:
        """Newest first, filtered; returns ``(jobs, next_page_token)``.

        The most selective index drives the scan (ref, then host, then state); the other
        filters are applied to the records read.
        """
        if external_ref is not None:
            idx = self.k_idx("ref", external_ref)
        elif host is not None:
            idx = self.k_idx("host", host)
        elif state is not None:
            idx = self.k_idx("state", state)
        else:
            idx = self.k_idx("all")
        after = decode_page_token(page_token) if page_token else None
        out: list[Job] = []
        batch = max(limit, 50)
        while len(out) < limit:
            hi = f"({after}" if after else "+"
            page: Any = self._call(partial(self.r.zrevrangebylex, idx, hi, "-", start=0,
                                           num=batch))
            ids = [_s(i) for i in page]
            if not ids:
                return out, None
            for job in self.get_many(ids):
                if ((state is None or job.state == state) and (host is None or job.host == host)
                        and (external_ref is None or job.external_ref == external_ref)):
                    out.append(job)
                    if len(out) == limit:
                        break
            after = out[-1].id if len(out) == limit else ids[-1]
            if len(ids) < batch and len(out) < limit:
                return out, None
        return out, encode_page_token(out[-1].id)

    def events(self, job_id: str, start: int = 0, count: int = 200) -> list[dict[str, Any]]:
        """Events of a job, oldest first, from index ``start``."""
        self.get(job_id)
        raw = self._call(lambda: self.r.lrange(self.k_events(job_id), start, start + count - 1))
        return [json.loads(x) for x in raw]

    def add_event(self, job_id: str, ev: Mapping[str, Any]) -> None:
        def write() -> None:
            pipe = self.r.pipeline(transaction=False)
            pipe.rpush(self.k_events(job_id), self._event(ev, time.time()))
            pipe.ltrim(self.k_events(job_id), -MAX_EVENTS, -1)
            pipe.execute()
        self._call(write)

    # --- writes that must not race ----------------------------------------------------

    def transition(self, job_id: str, allowed: Iterable[str] | None, new_state: str | None, *,
                   token: str | None = None, set_fields: Mapping[str, Any] | None = None,
                   delete: Iterable[str] = (), event: Mapping[str, Any] | None = None,
                   webhook: str | None = None) -> Job:
        """Atomically move a job from one of ``allowed`` states to ``new_state``.

        ``token`` (an execution's lease token) must still be the job's, else
        :class:`LostLease`. ``new_state=None`` keeps the state (a guarded update). A state
        outside ``allowed`` raises :class:`Conflict`. Returns the job as written.
        """
        allowed_set = None if allowed is None else frozenset(allowed)
        key = self.k_job(job_id)
        set_fields = dict(set_fields or {})
        delete = list(delete)

        def attempt() -> Job:
            while True:
                with self.r.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        raw: Any = pipe.hgetall(key)
                        if not raw:
                            raise NotFound(f"no job {job_id}")
                        job = Job.from_hash(raw)
                        if token is not None and job.lease_token != token:
                            raise LostLease(f"job {job_id} is owned by another execution")
                        if allowed_set is not None and job.state not in allowed_set:
                            raise Conflict(f"job {job_id} is {job.state}; cannot go to "
                                           f"{new_state or 'update'} from there")
                        now = time.time()
                        target = job.state if new_state is None else new_state
                        values = {**set_fields, "updated_at": now}
                        if target in TERMINAL and job.state not in TERMINAL:
                            values["finished_at"] = now
                        values["state"] = target
                        pipe.multi()
                        pipe.hset(key, mapping={k: encode_field(k, v) for k, v in values.items()
                                                if v is not None})
                        nulls = [k for k, v in values.items() if v is None] + delete
                        if nulls:
                            pipe.hdel(key, *nulls)
                        if target != job.state:
                            pipe.zrem(self.k_idx("state", job.state), job_id)
                            pipe.zadd(self.k_idx("state", target), {job_id: 0})
                            ev = {"type": "state", "from": job.state, "to": target, **(event or {})}
                            pipe.rpush(self.k_events(job_id), self._event(ev, now))
                            pipe.ltrim(self.k_events(job_id), -MAX_EVENTS, -1)
                            if target in TERMINAL:
                                pipe.zadd(f"{self.p}:finished", {job_id: now})
                                pipe.hincrby(f"{self.p}:metrics", f"jobs_{target}", 1)
                        elif event:
                            pipe.rpush(self.k_events(job_id), self._event(event, now))
                            pipe.ltrim(self.k_events(job_id), -MAX_EVENTS, -1)
                        updated = Job.from_hash({**{k.decode() if isinstance(k, bytes) else k: v
                                                    for k, v in raw.items()},
                                                 **{k: encode_field(k, v)
                                                    for k, v in values.items() if v is not None}})
                        for name in nulls:
                            updated = _without(updated, name)
                        hook = webhook or (f"job.{target}" if target != job.state else None)
                        if hook:
                            self._queue_webhook(pipe, updated, hook, now)
                        pipe.execute()
                        if target != job.state:
                            log.info("job %s: %s -> %s", job_id, job.state, target)
                        return updated
                    except redis.WatchError:
                        continue
        return self._call(attempt)

    def _queue_webhook(self, pipe: Any, job: Job, event_type: str, now: float) -> None:
        if not job.callback:
            return
        delivery_id = f"msg_{ULID()}"
        payload = {"type": event_type, "timestamp": iso(now), "data": job.to_public()}
        record = {"id": delivery_id, "job_id": job.id, "payload": payload, "attempt": 0,
                  "first_at": now}
        pipe.set(f"{self.p}:wh:{delivery_id}", json.dumps(record, separators=(",", ":")))
        pipe.zadd(f"{self.p}:wh:due", {delivery_id: now})

    # --- executions: lease ------------------------------------------------------------

    def claim(self, job_id: str, token: str, lease_seconds: float, worker: str,
              max_attempts: int) -> tuple[str, Job | None]:
        """Take a job for one execution. Returns ``(outcome, job)``.

        * ``"claimed"``: the lease is ours; a queued job became running, ``attempts`` + 1.
        * ``"busy"``: a live lease is held by another execution (a redelivered message while
          the first run goes on): do nothing.
        * ``"skip"``: the job is paused or finished (or gone): nothing to run.
        * ``"exhausted"``: too many attempts; the job was failed.
        """
        key, lease = self.k_job(job_id), self.k_lease(job_id)

        def attempt() -> tuple[str, Job | None]:
            while True:
                with self.r.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key, lease)
                        raw: Any = pipe.hgetall(key)
                        if not raw:
                            return "skip", None
                        job = Job.from_hash(raw)
                        if pipe.exists(lease):
                            return "busy", job
                        if job.state not in ("queued", *ACTIVE):
                            return "skip", job
                        pipe.multi()
                        pipe.set(lease, token, px=int(lease_seconds * 1000))
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
            if job.attempts >= max_attempts:
                failed = self.transition(
                    job_id, None, "failed", delete=["lease_token"],
                    set_fields={"error": {"type": "too_many_attempts", "title": "Gave up",
                                          "detail": f"{job.attempts} executions did not finish"
                                                    " (worker crashes?)"}})
                self.r.delete(lease)
                return "exhausted", failed
            state = "running" if job.state == "queued" else None
            try:
                # Guarded by the state read above: a cancel or pause that lands between
                # the lease and this write must not be overwritten (the job revived).
                claimed = self.transition(
                    job_id, [job.state], state, set_fields={
                        "lease_token": token, "attempts": job.attempts + 1, "worker": worker,
                        "reason": None, "started_at": job.started_at or time.time()},
                    event={"type": "attempt", "attempt": job.attempts + 1, "worker": worker})
            except (Conflict, NotFound):
                self.release_lease(job_id, token)
                return "skip", None
            return "claimed", claimed
        return self._call(attempt)

    def renew_lease(self, job_id: str, token: str, lease_seconds: float) -> bool:
        """Extend our lease; False when it is gone or another execution holds it."""
        lease = self.k_lease(job_id)

        def attempt() -> bool:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(lease)
                    cur = pipe.get(lease)
                    if cur is None or (cur.decode() if isinstance(cur, bytes) else cur) != token:
                        return False
                    pipe.multi()
                    pipe.pexpire(lease, int(lease_seconds * 1000))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    return False
        return self._call(attempt)

    def release_lease(self, job_id: str, token: str) -> None:
        """Drop our lease (compare-and-delete) so a later execution may claim at once."""
        lease = self.k_lease(job_id)

        def attempt() -> None:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(lease)
                    cur = pipe.get(lease)
                    if cur is not None and (cur.decode() if isinstance(cur, bytes)
                                            else cur) == token:
                        pipe.multi()
                        pipe.delete(lease)
                        pipe.execute()
                except redis.WatchError:
                    pass
        self._call(attempt)

    def lease_alive(self, job_id: str) -> bool:
        return bool(self._call(lambda: self.r.exists(self.k_lease(job_id))))

    # --- maintenance ------------------------------------------------------------------

    def ids_in_state(self, state: str) -> list[str]:
        return [i.decode() if isinstance(i, bytes) else i
                for i in self._call(lambda: self.r.zrange(self.k_idx("state", state), 0, -1))]

    def counts(self) -> dict[str, int]:
        """Jobs per state (for /metrics)."""
        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for s in STATES:
                pipe.zcard(self.k_idx("state", s))
            return pipe.execute()
        return dict(zip(STATES, (int(n) for n in self._call(read)), strict=True))

    def purge_finished(self, retention_seconds: float, now: float | None = None) -> int:
        """Delete jobs finished more than ``retention_seconds`` ago; returns how many."""
        now = time.time() if now is None else now
        old = self._call(lambda: self.r.zrangebyscore(f"{self.p}:finished", "-inf",
                                                      now - retention_seconds, start=0, num=500))
        n = 0
        for raw_id in old:
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            try:
                job = self.get(job_id)
            except NotFound:
                job = None
            pipe = self.r.pipeline(transaction=True)
            if job is not None:
                for idx in self._indexes(job):
                    pipe.zrem(idx, job_id)
            pipe.delete(self.k_job(job_id), self.k_events(job_id))
            pipe.zrem(f"{self.p}:finished", job_id)
            self._call(pipe.execute)
            n += 1
        if n:
            log.info("retention: purged %d finished jobs", n)
        return n

    # --- metrics ----------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self._call(lambda: self.r.hincrby(f"{self.p}:metrics", name, n))

    def observe_chunk(self, seconds: float, nbytes: int,
                      publish: tuple[str, str] | None = None) -> None:
        """One chunk done: bytes processed and a latency histogram sample (and, in the
        same round trip, ``publish = (channel, message)`` for SSE listeners)."""
        def write() -> None:
            pipe = self.r.pipeline(transaction=False)
            if publish is not None:
                pipe.publish(*publish)
            pipe.hincrby(f"{self.p}:metrics", "bytes_processed", nbytes)
            for le in CHUNK_BUCKETS:
                if seconds <= le:
                    pipe.hincrby(f"{self.p}:metrics:chunk", str(le), 1)
            pipe.hincrby(f"{self.p}:metrics:chunk", "+Inf", 1)
            pipe.hincrbyfloat(f"{self.p}:metrics:chunk", "sum", seconds)
            pipe.execute()
        self._call(write)

    def metrics(self) -> tuple[dict[str, int], dict[str, float]]:
        """``(counters, chunk_histogram)``."""
        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(f"{self.p}:metrics")
            pipe.hgetall(f"{self.p}:metrics:chunk")
            return pipe.execute()
        counters, hist = self._call(read)
        return ({_s(k): int(v) for k, v in counters.items()},
                {_s(k): float(v) for k, v in hist.items()})


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _without(job: Job, name: str) -> Job:
    from dataclasses import replace
    if name not in {f.name for f in fields(job)}:
        return job
    blank: dict[str, Any] = {name: None}
    return replace(job, **blank)
