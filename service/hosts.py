"""The host registry: workers register with a heartbeat, their host, queue, roots and free
space per root. A record lives a few ticks (a dead worker vanishes)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from service.store import JobStore

log = logging.getLogger(__name__)


def queue_for(host: str) -> str:
    """The queue a host's worker consumes: jobs must run where the disks are."""
    return f"vhdmend.{host}"


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


def register(store: JobStore, host: str, worker: str, roots: Mapping[str, str],
             ttl: float, *, queue: str, pool: str = "") -> None:
    """Record (or refresh) this worker for ``ttl`` seconds."""
    store.put_worker(host, worker, {
        "host": host, "worker": worker, "queue": queue, "pool": pool,
        "roots": json.dumps(sorted(roots)), "free": json.dumps(free_space(roots)),
        "heartbeat": repr(time.time()), "pid": str(os.getpid())}, ttl)


def unregister(store: JobStore, host: str, worker: str) -> None:
    store.drop_worker(host, worker)


def workers(store: JobStore) -> list[dict[str, Any]]:
    """Every live worker's record."""
    return [{"host": d["host"], "worker": d["worker"], "queue": d.get("queue"),
             "roots": json.loads(d["roots"]), "free": json.loads(d["free"]),
             "heartbeat": float(d["heartbeat"]), "pid": int(d.get("pid", 0))}
            for d in store.worker_records()]
