"""``/v1/hosts``: every registered worker's host, roots, free space and running jobs."""

from __future__ import annotations

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
           responses={200: ("Hosts with a live worker", HostListSchema)})
def list_hosts() -> Response:
    store: JobStore = current_app.extensions["vhdmend_store"]
    hosts: dict[str, dict[str, Any]] = {}
    for w in registry.workers(store):
        h = hosts.setdefault(w["host"], {"host": w["host"], "roots": {}, "workers": [],
                                         "running_jobs": [], "_hb": 0.0})
        h["roots"].update(w["free"])
        h["_hb"] = max(h["_hb"], w["heartbeat"])
        h["workers"].append({"worker": w["worker"], "queue": w["queue"],
                             "last_heartbeat": iso(w["heartbeat"])})
    active = [job_id for state in sorted(ACTIVE) for job_id in store.ids_in_state(state)]
    for job in store.get_many(active):
        if job.host in hosts:
            hosts[job.host]["running_jobs"].append(job.id)
    items = []
    for name in sorted(hosts):
        h = hosts[name]
        h["last_heartbeat"] = iso(h.pop("_hb"))
        items.append(h)
    return jsonify(HostListSchema().dump({"items": items}))
