"""``/v1/hosts``: every registered worker's host (live or stale), roots, free space and
running jobs."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from api.auth import requires
from api.hosts.schemas import HostListSchema
from api.openapi import operation
from service import hosts as registry
from service.job import iso
from service.states import ACTIVE
from service.store import JobStore

bp = Blueprint("hosts", __name__, url_prefix="/v1/hosts")


@bp.get("")
@requires("jobs:read")
@operation("Storage hosts and their workers", tags=("hosts",),
           responses={200: ("Hosts with a live worker, and hosts whose workers stopped "
                            "heartbeating (`stale`, with the time since)", HostListSchema)})
def list_hosts() -> Response:
    store: JobStore = current_app.extensions["vhdmend_store"]
    now = time.time()
    by_host: dict[str, list[dict[str, Any]]] = {}
    for w in registry.all_workers(store, now):
        by_host.setdefault(w["host"], []).append(w)
    active = [job_id for state in sorted(ACTIVE) for job_id in store.ids_in_state(state)]
    running: dict[str, list[str]] = {}
    for job in store.get_many(active):
        running.setdefault(job.host, []).append(job.id)
    items = []
    for name in sorted(by_host):
        live = [w for w in by_host[name] if not w["stale"]]
        # A live host shows its live workers (a restarted worker's dead predecessor stays
        # in the registry for a day); a stale one shows the workers that stopped.
        shown = sorted(live or by_host[name], key=lambda w: -w["heartbeat"])
        roots: dict[str, Any] = {}
        for w in reversed(shown):          # the newest heartbeat's figures win
            roots.update(w["free"])
        newest = shown[0]["heartbeat"]
        items.append({
            "host": name, "state": "live" if live else "stale",
            "seconds_since_heartbeat": round(max(0.0, now - newest), 1),
            "roots": roots, "last_heartbeat": iso(newest),
            "workers": [{"worker": w["worker"], "queue": w["queue"],
                         "last_heartbeat": iso(w["heartbeat"]),
                         "state": "stale" if w["stale"] else "live",
                         "seconds_since_heartbeat": round(w["age"], 1)} for w in shown],
            "running_jobs": running.get(name, [])})
    return jsonify(HostListSchema().dump({"items": items}))
