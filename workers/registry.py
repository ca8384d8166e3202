"""Workers register in Redis with a heartbeat: their host, roots and free space per root.

``P:worker:{host}:{worker}`` is a hash with a TTL of a few ticks (a dead worker vanishes);
``P:workers`` indexes the keys so the API can list them without SCAN.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import redis

log = logging.getLogger(__name__)


def free_space(roots: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Free and total bytes of the volume of each root."""
    out = {}
    for name, path in roots.items():
        try:
            st = os.statvfs(path)
            out[name] = {"free_bytes": st.f_bavail * st.f_frsize,
                         "total_bytes": st.f_blocks * st.f_frsize}
        except OSError as e:
            log.warning("root %s (%s) unavailable: %s", name, path, e)
            out[name] = {"free_bytes": 0, "total_bytes": 0}
    return out


def register(r: redis.Redis, prefix: str, host: str, worker: str, roots: Mapping[str, str],
             ttl: float, *, queue: str, pool: str = "") -> None:
    """Record (or refresh) this worker."""
    key = f"{prefix}:worker:{host}:{worker}"
    pipe = r.pipeline(transaction=False)
    pipe.hset(key, mapping={
        "host": host, "worker": worker, "queue": queue, "pool": pool,
        "roots": json.dumps(sorted(roots)), "free": json.dumps(free_space(roots)),
        "heartbeat": repr(time.time()), "pid": str(os.getpid())})
    pipe.pexpire(key, max(1, int(ttl * 1000)))
    pipe.sadd(f"{prefix}:workers", key)
    pipe.execute()


def unregister(r: redis.Redis, prefix: str, host: str, worker: str) -> None:
    key = f"{prefix}:worker:{host}:{worker}"
    r.delete(key)
    r.srem(f"{prefix}:workers", key)


def workers(r: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    """Every live worker's record (expired ones are dropped from the index)."""
    keys = sorted(k.decode() if isinstance(k, bytes) else k
                  for k in r.smembers(f"{prefix}:workers"))  # type: ignore[union-attr,unused-ignore]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    out = []
    for k, raw in zip(keys, pipe.execute(), strict=True):
        if not raw:
            r.srem(f"{prefix}:workers", k)
            continue
        d = {(a.decode() if isinstance(a, bytes) else a): (b.decode() if isinstance(b, bytes)
                                                          else b) for a, b in raw.items()}
        out.append({"host": d["host"], "worker": d["worker"], "queue": d.get("queue"),
                    "roots": json.loads(d["roots"]), "free": json.loads(d["free"]),
                    "heartbeat": float(d["heartbeat"]), "pid": int(d.get("pid", 0))})
    return out
