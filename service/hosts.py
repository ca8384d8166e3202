"""The host registry: workers register with a heartbeat, their host, queue, roots and free
space per root. A record is live a few ticks after its heartbeat, then ``stale`` (the
worker died or froze) for a day; a worker that stops cleanly removes it."""

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


#: How long the record of a worker that stopped heartbeating is kept (shown ``stale``); a
#: worker that stops cleanly removes its record at once.
KEEP_SECONDS = 24 * 3600.0


def register(store: JobStore, host: str, worker: str, roots: Mapping[str, str],
             ttl: float, *, queue: str, pool: str = "") -> None:
    """Record (or refresh) this worker: live for ``ttl`` seconds, then ``stale`` (its
    heartbeat stopped) until :data:`KEEP_SECONDS` pass."""
    store.put_worker(host, worker, {
        "host": host, "worker": worker, "queue": queue, "pool": pool,
        "roots": json.dumps(sorted(roots)), "free": json.dumps(free_space(roots)),
        "heartbeat": repr(time.time()), "stale_after": repr(float(ttl))},
        max(float(ttl), KEEP_SECONDS))


def unregister(store: JobStore, host: str, worker: str) -> None:
    store.drop_worker(host, worker)


def all_workers(store: JobStore, now: float | None = None) -> list[dict[str, Any]]:
    """Every worker's record, live or stale: ``stale`` is True once its heartbeat is older
    than the window it registered with; ``age`` is the seconds since that heartbeat."""
    now = time.time() if now is None else now
    out = []
    for d in store.worker_records():
        beat = float(d["heartbeat"])
        # A record without the field (written before it existed) lived only its window.
        window = float(d.get("stale_after") or "inf")
        out.append({"host": d["host"], "worker": d["worker"], "queue": d.get("queue"),
                    "roots": json.loads(d["roots"]), "free": json.loads(d["free"]),
                    "heartbeat": beat, "age": max(0.0, now - beat),
                    "stale": now - beat > window})
    return out


def workers(store: JobStore, now: float | None = None) -> list[dict[str, Any]]:
    """Every live worker's record (its heartbeat within its window)."""
    return [w for w in all_workers(store, now) if not w["stale"]]
