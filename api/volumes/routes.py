"""``/v1/volumes``: every watched volume, its trend, risk, chains and plan."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from api.auth import requires
from api.openapi import operation
from api.volumes.schemas import VolumeListSchema, VolumeQuerySchema, VolumeSchema
from service.errors import NotFound
from service.store import JobStore
from service.volumes.monitor import iso

bp = Blueprint("volumes", __name__, url_prefix="/v1/volumes")


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """A volume's status without its chains, plan and history (the list view)."""
    ages = [c["oldest_snapshot_age_seconds"] for c in status.get("chains", [])
            if c.get("oldest_snapshot_age_seconds") is not None]
    return {**{k: v for k, v in status.items() if k not in ("chains", "plan", "alert")},
            "chain_count": len(status.get("chains", [])),
            "oldest_snapshot_age_seconds": max(ages) if ages else None}


def statuses(store: JobStore, host: str | None = None,
             risk: str | None = None) -> list[dict[str, Any]]:
    """The stored statuses, riskiest first, filtered."""
    order = {"critical": 0, "warning": 1, "ok": 2}
    out = [s for s in store.volumes.statuses()
           if (host is None or s["host"] == host) and (risk is None or s["risk"] == risk)]
    return sorted(out, key=lambda s: (order.get(s["risk"], 3), s["host"], s["id"]))


@bp.get("")
@requires("jobs:read")
@operation("Watched volumes, riskiest first", query=VolumeQuerySchema, tags=("volumes",),
           responses={200: ("Volumes", VolumeListSchema)})
def list_volumes() -> Response:
    q = VolumeQuerySchema().load(request.args.to_dict())
    store: JobStore = current_app.extensions["vhdmend_store"]
    items = [summary(s) for s in statuses(store, q.get("host"), q.get("risk"))]
    return jsonify(VolumeListSchema().dump({"items": items}))


@bp.get("/<volume_id>")
@requires("jobs:read")
@operation("One volume: history, chains, growth, snapshot age, problems and the plan "
           "(each step a job body ready to POST to /v1/jobs)", tags=("volumes",),
           responses={200: ("The volume", VolumeSchema), 404: ("No such volume", None)})
def get_volume(volume_id: str) -> Response:
    store: JobStore = current_app.extensions["vhdmend_store"]
    status = store.volumes.status(volume_id) if len(volume_id) <= 64 else None
    if status is None:
        raise NotFound(f"no volume {volume_id}")
    history = [{"at": iso(s.t), "free_bytes": s.free_bytes, "disk_bytes": s.disk_bytes,
                "growth_bytes": s.growth_bytes} for s in store.volumes.history(volume_id)]
    chains = [{**c, "volume": volume_id} for c in status.get("chains", [])]
    return jsonify(VolumeSchema().dump({**summary(status), "chains": chains,
                                        "plan": status.get("plan"), "history": history}))
