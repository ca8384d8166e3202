"""The host registry: workers register with a heartbeat, their host, queue, roots and free
space per root. A record lives a few ticks (a dead worker vanishes)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from service.store import JobStore

log = logging.getLogger(__name__)


def queue_for(host: str) -> str:
    """The queue a host's worker consumes: jobs must run where the disks are."""
    return f"vhdmend.{host}"


@cache
def _salt() -> bytes:
    """A per-machine secret (never served), so a worker id cannot be reversed to a name."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, "rb") as f:
                return f.read().strip()
        except OSError:
            continue
    return socket.gethostname().encode()


def worker_id(host: str, pid: int | None = None) -> str:
    """The opaque id of the worker process ``pid`` (default: this process's Celery main
    process) of ``host``: stable for that process, the same in jobs, events and /v1/hosts,
    and free of machine names and PIDs (issue 8 D3)."""
    if pid is None:
        pid = main_pid()
    raw = f"{host}|{socket.gethostname()}|{pid}".encode()
    return "w_" + hashlib.sha256(_salt() + b"|" + raw).hexdigest()[:16]


def main_pid() -> int:
    """The worker's main process: a prefork child reports its parent's PID (one worker)."""
    return int(os.environ.get("VHDMEND_WORKER_MAIN_PID") or os.getpid())


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
        "heartbeat": repr(time.time())}, ttl)


def unregister(store: JobStore, host: str, worker: str) -> None:
    store.drop_worker(host, worker)


def workers(store: JobStore) -> list[dict[str, Any]]:
    """Every live worker's record."""
    return [{"host": d["host"], "worker": d["worker"], "queue": d.get("queue"),
             "roots": json.loads(d["roots"]), "free": json.loads(d["free"]),
             "heartbeat": float(d["heartbeat"])}
            for d in store.worker_records()]
