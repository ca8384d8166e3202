"""Chain scheduling: one mutating job per chain at a time.

* The **chain lock** is a token lease (:mod:`service.lease`) keyed by the base disk's
  identity, so two jobs on any layers of one chain exclude each other. Every acquisition
  increments a *fencing number* that the operation writes into its on-disk journal. A
  holder whose lease lapsed (a long GC pause, SIGSTOP, a partition) may still believe it
  holds the lock; the fence, checked before every irreversible step, is what stops it.
* A **reservation** keeps the chain for a paused job: its journal describes these files.
* **Waiters** are the jobs that found the chain taken; the holder nudges them on release.
"""

from __future__ import annotations

import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service import redisconn
from service.keys import Keys
from service.lease import Lease, RedisLease

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Held:
    """Proof of one acquisition: the owner token and its fencing number."""

    key: str
    token: str
    fence: int


class ChainLock:
    """The lock of one chain (``identity`` = the base disk's id) over a fenced lease."""

    def __init__(self, lease: Lease, identity: str, *, lease_seconds: float = 30.0,
                 fence: Callable[[], int | str | None], holder: Callable[[], str | None],
                 fence_key: str = "", holder_key: str = "",
                 raise_to: Callable[[str, int], int] | None = None) -> None:
        self.lease = lease
        self.identity = identity
        self.key = lease.key
        self.fence_key, self.holder_key = fence_key, holder_key
        self.lease_seconds = lease_seconds
        self._fence = fence
        self._holder = holder
        #: ``raise_to(token, floor)``: lift the counter above ``floor`` while ``token``
        #: holds the lock; the fence now, 0 when the lock is not ours.
        self._raise_to = raise_to

    def acquire(self, job_id: str) -> Held | None:
        """Take the lock for ``job_id``; ``None`` when another holder's lease is live."""
        token = secrets.token_hex(16)
        fence = self.lease.acquire(token, self.lease_seconds, job_id)
        if not fence:
            return None
        log.info("job %s: chain lock %s acquired, fence %d", job_id, self.identity, fence)
        return Held(self.key, token, fence)

    def renew(self, held: Held) -> bool:
        """Extend the lease; False when it lapsed (we must stop before the next step)."""
        return self.lease.renew(held.token, self.lease_seconds)

    def release(self, held: Held) -> bool:
        """Free the lock if it is still ours."""
        return self.lease.release(held.token)

    def holder(self) -> str | None:
        """The job id holding the lock now, if any."""
        return self._holder()

    def current_fence(self) -> int:
        """The fencing number of the latest acquisition (0: never acquired)."""
        return int(self._fence() or 0)

    def raise_fence(self, held: Held, floor: int) -> Held | None:
        """Make ``held``'s fencing number greater than ``floor`` (a fence already recorded
        in the on-disk journal): after a Redis failover lost increments, or a restore from
        an old backup, the counter may lag the journal. ``None`` when the lock is no
        longer ours. The journal, not Redis, then stays the monotonic record."""
        if held.fence > floor:
            return held
        if self._raise_to is None:
            raise NotImplementedError("this chain lock cannot raise its fence")
        fence = self._raise_to(held.token, floor)
        if not fence:
            return None
        log.warning("chain lock %s: fence %d was not above the journal's %d (Redis lost "
                    "writes?); now %d", self.identity, held.fence, floor, fence)
        return Held(held.key, held.token, fence)

    def still_current(self, held: Held) -> bool:
        """True while ``held`` is the latest acquisition and its lease is live."""
        return self.lease.owner() == held.token and self.current_fence() == held.fence


def redis_chain_lock(client: Any, identity: str, *, prefix: str = "vhdmend",
                     lease_seconds: float = 30.0) -> ChainLock:
    """The chain lock of ``identity`` on Redis."""
    keys = Keys(prefix)
    lease = RedisLease(client, keys.lock(identity), fence_key=keys.fence(identity),
                       companions=(keys.lock_holder(identity),))

    def read(key: str) -> str | None:
        raw = client.get(key)
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
    script = client.register_script(_RAISE_FENCE)

    def raise_to(token: str, floor: int) -> int:
        fence = int(script(keys=[keys.lock(identity), keys.fence(identity)],
                           args=[token, floor]))
        if fence:
            redisconn.wait_for_replica(client)
        return fence
    return ChainLock(lease, identity, lease_seconds=lease_seconds,
                     fence=lambda: read(keys.fence(identity)),
                     holder=lambda: read(keys.lock_holder(identity)),
                     fence_key=keys.fence(identity), holder_key=keys.lock_holder(identity),
                     raise_to=raise_to)


# KEYS: lock, fence counter. ARGV: token, floor. While the token holds the lock, raise the
# counter above the floor; returns the fence now (0: the lock is not ours).
_RAISE_FENCE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
  if fence <= tonumber(ARGV[2]) then
    fence = tonumber(ARGV[2]) + 1
    redis.call('SET', KEYS[2], fence)
  end
  return fence
end
return 0
"""


class Chains(ABC):
    """Locks, reservations and waiters of every chain."""

    @abstractmethod
    def lock(self, identity: str, lease_seconds: float) -> ChainLock:
        """The chain's lock."""

    @abstractmethod
    def reserved_by(self, identity: str) -> str | None:
        """The job keeping the chain (a paused one), if any."""

    @abstractmethod
    def reserve(self, identity: str, job_id: str) -> None:
        """Keep the chain for ``job_id`` (it paused with a journal on these files)."""

    @abstractmethod
    def unreserve(self, identity: str, job_id: str) -> None:
        """Drop the reservation if ``job_id`` holds it (compare-and-delete)."""

    @abstractmethod
    def add_waiter(self, identity: str, job_id: str) -> None:
        """``job_id`` waits for the chain."""

    @abstractmethod
    def take_waiters(self, identity: str) -> list[str]:
        """Every job waiting for the chain (the set is emptied)."""


# KEYS: reservation. ARGV: job id. Compare-and-delete.
_UNRESERVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisChains(Chains):
    """Chain scheduling on Redis."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._unreserve = client.register_script(_UNRESERVE)

    def lock(self, identity: str, lease_seconds: float) -> ChainLock:
        return redis_chain_lock(self.r, identity, prefix=self.keys.prefix,
                                lease_seconds=lease_seconds)

    def reserved_by(self, identity: str) -> str | None:
        raw = self.r.get(self.keys.reserved(identity))
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    def reserve(self, identity: str, job_id: str) -> None:
        self.r.set(self.keys.reserved(identity), job_id)

    def unreserve(self, identity: str, job_id: str) -> None:
        self._unreserve(keys=[self.keys.reserved(identity)], args=[job_id])

    def add_waiter(self, identity: str, job_id: str) -> None:
        self.r.sadd(self.keys.waiters(identity), job_id)

    def take_waiters(self, identity: str) -> list[str]:
        pipe = self.r.pipeline(transaction=True)
        pipe.smembers(self.keys.waiters(identity))
        pipe.delete(self.keys.waiters(identity))
        members, _ = pipe.execute()
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
