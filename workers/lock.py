"""A per-chain lock: owned by a token, leased, renewed by heartbeat, fenced.

Keyed by the base disk's identity, so two jobs on any layers of one chain exclude each
other. Not dramatiq's counter-as-mutex: the value is the owner's random token, release is
compare-and-delete (Lua, atomic), renewal is compare-and-extend, and every acquisition
increments a *fencing number* that the operation writes into its on-disk journal. A holder
whose lease lapsed (a long GC pause, SIGSTOP, a partition) may still believe it holds the
lock; the fence, checked before every irreversible step, is what stops it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

# KEYS: lock, fence counter, holder job. ARGV: token, lease ms, job id.
# Returns the new fencing number, or 0 when another token holds the lock.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
  return fence
end
return 0
"""

# KEYS: lock, holder job. ARGV: token, lease ms. 1 when still ours and extended.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock, holder job. ARGV: token. Compare-and-delete: never frees another's lock.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Held:
    """Proof of one acquisition: the owner token and its fencing number."""

    key: str
    token: str
    fence: int


class ChainLock:
    """The lock of one chain (``identity`` = the base disk's id)."""

    def __init__(self, client: redis.Redis, identity: str, *, prefix: str = "vhdmend",
                 lease_seconds: float = 30.0) -> None:
        self.r = client
        self.identity = identity
        self.key = f"{prefix}:lock:{identity}"
        self.fence_key = f"{prefix}:fence:{identity}"
        self.holder_key = f"{prefix}:lock:{identity}:job"
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, job_id: str) -> Held | None:
        """Take the lock for ``job_id``; ``None`` when another holder's lease is live."""
        token = secrets.token_hex(16)
        fence = int(self._acquire(keys=[self.key, self.fence_key, self.holder_key],
                                  args=[token, self.lease_ms, job_id]))
        if not fence:
            return None
        log.info("job %s: chain lock %s acquired, fence %d", job_id, self.identity, fence)
        return Held(self.key, token, fence)

    def renew(self, held: Held) -> bool:
        """Extend the lease; False when it lapsed (we must stop before the next step)."""
        return bool(self._renew(keys=[self.key, self.holder_key],
                                args=[held.token, self.lease_ms]))

    def release(self, held: Held) -> bool:
        """Free the lock if it is still ours."""
        return bool(self._release(keys=[self.key, self.holder_key], args=[held.token]))

    def holder(self) -> str | None:
        """The job id holding the lock now, if any."""
        raw = self.r.get(self.holder_key)
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    def current_fence(self) -> int:
        """The fencing number of the latest acquisition (0: never acquired)."""
        raw = self.r.get(self.fence_key)
        return int(raw) if raw is not None else 0

    def still_current(self, held: Held) -> bool:
        """True while ``held`` is the latest acquisition and its lease is live."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.key)
        pipe.get(self.fence_key)
        owner, fence = pipe.execute()
        owner = owner.decode() if isinstance(owner, bytes) else owner
        return owner == held.token and fence is not None and int(fence) == held.fence
