"""The job store: the source of truth for every job (the broker is only a nudge).

:class:`JobStore` is abstract and holds the rules (idempotent create, guarded transitions
checked against :mod:`service.states`, the claim of an execution); :class:`RedisJobStore`
is the real one and the only owner of Redis key names (:mod:`service.keys`);
:class:`StubJobStore` keeps everything in memory for fast tests (dramatiq's broker/stub
split).
"""

from __future__ import annotations

from service.store.base import Change, JobStore
from service.store.redis_store import RedisJobStore, redis_client
from service.store.stub import StubJobStore

__all__ = ["Change", "JobStore", "RedisJobStore", "StubJobStore", "redis_client"]
