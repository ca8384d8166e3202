"""Per-process handles: settings, the Redis client and the job store (made after fork)."""

from __future__ import annotations

import os
from functools import cache

import redis

from service import config, hosts
from service.config import Settings
from service.store import RedisJobStore, redis_client

_pid_store: dict[int, RedisJobStore] = {}


@cache
def settings() -> Settings:
    """The settings of this process (environment + config file)."""
    return config.load()


def client(s: Settings | None = None) -> redis.Redis:
    """A Redis client for ``s`` (health-checked connections, short socket timeouts)."""
    return redis_client(s or settings())


def store() -> RedisJobStore:
    """This process's job store; a forked child makes its own connections."""
    pid = os.getpid()
    if pid not in _pid_store:
        s = settings()
        _pid_store.clear()
        _pid_store[pid] = RedisJobStore(client(s), prefix=s.prefix,
                                   retry_seconds=s.redis_retry_seconds,
                                   webhook_progress_step=s.webhook_progress_step)
    return _pid_store[pid]


def worker_name() -> str:
    """The opaque id of this worker (:func:`service.hosts.worker_id`): no machine name or
    PID reaches a job, an event or /v1/hosts."""
    return hosts.worker_id(settings().host or "anyhost")
