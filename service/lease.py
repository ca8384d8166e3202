"""The token lease: a key owned by a random token, with a TTL, renewed by its owner.

One implementation for the job lease (one execution per job) and the chain lock (one
mutating job per chain). Acquire is ``SET NX PX`` (optionally incrementing a *fencing*
counter and setting companion keys, e.g. the chain's holder job, in the same script);
renewal is compare-and-extend and release compare-and-delete, so an owner whose lease
lapsed can never extend or free its successor's. Lua makes each step atomic (on Redis and
on fakeredis with ``lupa``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

from service import redisconn

log = logging.getLogger(__name__)

# KEYS: lease, [fence counter if ARGV[3] == '1'], companions...
# ARGV: token, lease ms, fenced flag, companion value.
# Returns the new fencing number (1 when unfenced), or 0 when another token holds it.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local first, fence = 2, 1
  if ARGV[3] == '1' then
    fence = redis.call('INCR', KEYS[2])
    first = 3
  end
  for i = first, #KEYS do
    redis.call('SET', KEYS[i], ARGV[4], 'PX', ARGV[2])
  end
  return fence
end
return 0
"""

# KEYS: lease, companions... ARGV: token, lease ms. 1 when still ours and extended.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  for i = 1, #KEYS do
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
  return 1
end
return 0
"""

# KEYS: lease, companions... ARGV: token. Compare-and-delete: never frees another's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', unpack(KEYS))
  return 1
end
return 0
"""


class Lease(ABC):
    """A token lease on one key."""

    key: str

    @abstractmethod
    def acquire(self, token: str, seconds: float, value: str = "") -> int:
        """Take the lease for ``token``: the fencing number (1 when unfenced), or 0 when
        another token's lease is live. ``value`` is written to the companion keys."""

    @abstractmethod
    def renew(self, token: str, seconds: float) -> bool:
        """Extend the lease if ``token`` still owns it."""

    @abstractmethod
    def release(self, token: str) -> bool:
        """Drop the lease if ``token`` still owns it."""

    @abstractmethod
    def owner(self) -> str | None:
        """The token owning the lease now, if any."""

    def alive(self) -> bool:
        return self.owner() is not None


class RedisLease(Lease):
    """A token lease on Redis key ``key``; ``fence_key`` counts acquisitions (fencing);
    ``companions`` live and die with the lease."""

    def __init__(self, client: Any, key: str, *, fence_key: str | None = None,
                 companions: tuple[str, ...] = ()) -> None:
        self.r = client
        self.key = key
        self.fence_key = fence_key
        self.companions = companions
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, token: str, seconds: float, value: str = "") -> int:
        keys = [self.key, *([self.fence_key] if self.fence_key else []), *self.companions]
        fence = int(self._acquire(keys=keys, args=[token, _ms(seconds),
                                                   "1" if self.fence_key else "0", value]))
        if fence:
            # Sentinel: replication is asynchronous. Wait for a replica to hold the lease
            # and the fence before acting on them, so a failover now does not hand the
            # same lease or fencing number to a second execution (best effort: see
            # docs/OPERATIONS.md, "High availability").
            acked = redisconn.wait_for_replica(self.r)
            if acked == 0:
                log.warning("lease %s: no replica acknowledged it within %d ms; a failover "
                            "now could lose it", self.key, redisconn.REPLICA_WAIT_MS)
        return fence

    def renew(self, token: str, seconds: float) -> bool:
        return bool(self._renew(keys=[self.key, *self.companions], args=[token, _ms(seconds)]))

    def release(self, token: str) -> bool:
        return bool(self._release(keys=[self.key, *self.companions], args=[token]))

    def owner(self) -> str | None:
        raw = self.r.get(self.key)
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
