"""Every Redis key name of the service, in one place (``P`` is the configured prefix)::

    P:job:{id}              hash, one field per Job attribute (dicts JSON-encoded)
    P:job:{id}:events       list of JSON events (state changes, attempts, webhooks), capped
    P:idx:all               zset, every job id (score 0: ordered by id, i.e. ULID = time)
    P:idx:state:{s}         zset per state; P:idx:host:{h}; P:idx:ref:{external_ref};
                            P:idx:type:{t} per job kind
    P:migrated:{name}       a one-time index backfill is done (``type-index``)
    P:finished              zset id -> finished_at, for retention
    P:lease:{id}            the live execution's token, with a TTL (a token lease)
    P:idem:{who}:{key}      Idempotency-Key -> request fingerprint and job id (24 h)
    P:wh:due, P:wh:{id}     webhook deliveries due, and each delivery's record
    P:metrics               hash of counters; P:metrics:chunk histogram of chunk latency
    P:progress:{id}         pub/sub channel: a job's progress was written (SSE)
    P:reaper                the reaper's turn (a short NX key, :meth:`Keys.turn`)
    P:worker:{host}:{w}     a live worker's record (TTL); P:workers indexes them
    P:lock:{chain}          a chain lock's owner token (a token lease); P:lock:{chain}:job
                            its holder job; P:fence:{chain} its fencing counter
    P:reserved:{chain}      the paused job that keeps the chain
    P:waiters:{chain}       set of jobs waiting for the chain
    P:vol:{id}              a watched volume's latest status (JSON); P:volumes indexes them
    P:vol:{id}:full         its last day of samples; P:vol:{id}:coarse hourly for 30 days
    P:vol:{id}:alert        its alert state (last risk notified, when, repeat due)

Only :mod:`service.store.redis_store`, :mod:`service.chains`, the lease and
:mod:`service.volumes.redis_store` use these names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "vhdmend"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def lease(self, job_id: str) -> str:
        return f"{self.prefix}:lease:{job_id}"

    def idx(self, kind: str, value: str | None = None) -> str:
        return f"{self.prefix}:idx:{kind}" if value is None else f"{self.prefix}:idx:{kind}:{value}"

    def migrated(self, name: str) -> str:
        return f"{self.prefix}:migrated:{name}"

    @property
    def finished(self) -> str:
        return f"{self.prefix}:finished"

    def idem(self, scoped_key: str) -> str:
        return f"{self.prefix}:idem:{scoped_key}"

    @property
    def webhooks_due(self) -> str:
        return f"{self.prefix}:wh:due"

    def webhook(self, delivery_id: str) -> str:
        return f"{self.prefix}:wh:{delivery_id}"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}:metrics"

    @property
    def chunk_histogram(self) -> str:
        return f"{self.prefix}:metrics:chunk"

    def progress(self, job_id: str) -> str:
        return f"{self.prefix}:progress:{job_id}"

    def turn(self, name: str) -> str:
        """A short turn-taking key (``P:reaper``: one worker sweeps per tick)."""
        return f"{self.prefix}:{name}"

    def worker(self, host: str, worker: str) -> str:
        return f"{self.prefix}:worker:{host}:{worker}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def lock(self, chain: str) -> str:
        return f"{self.prefix}:lock:{chain}"

    def lock_holder(self, chain: str) -> str:
        return f"{self.prefix}:lock:{chain}:job"

    def fence(self, chain: str) -> str:
        return f"{self.prefix}:fence:{chain}"

    def reserved(self, chain: str) -> str:
        return f"{self.prefix}:reserved:{chain}"

    def waiters(self, chain: str) -> str:
        return f"{self.prefix}:waiters:{chain}"

    def volume(self, volume_id: str) -> str:
        return f"{self.prefix}:vol:{volume_id}"

    def volume_full(self, volume_id: str) -> str:
        return f"{self.prefix}:vol:{volume_id}:full"

    def volume_coarse(self, volume_id: str) -> str:
        return f"{self.prefix}:vol:{volume_id}:coarse"

    def volume_alert(self, volume_id: str) -> str:
        return f"{self.prefix}:vol:{volume_id}:alert"

    @property
    def volumes(self) -> str:
        return f"{self.prefix}:volumes"
