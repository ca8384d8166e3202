"""``/v1/chains``: every chain the scans found, across volumes (filters: host, risk)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from api.auth import requires
from api.chains.schemas import ChainListSchema, ChainQuerySchema
from api.openapi import operation
from api.volumes.routes import statuses
from service.store import JobStore

bp = Blueprint("chains", __name__, url_prefix="/v1/chains")


@bp.get("")
@requires("jobs:read")
@operation("Disk chains, riskiest volume first, then by growth", query=ChainQuerySchema,
           tags=("volumes",), responses={200: ("Chains", ChainListSchema)})
def list_chains() -> Response:
    q = ChainQuerySchema().load(request.args.to_dict())
    store: JobStore = current_app.extensions["vhdmend_store"]
    items = []
    for status in statuses(store, q.get("host")):
        for chain in sorted(status.get("chains", []), key=lambda c: -c["growth_bytes"]):
            if q.get("risk") is None or chain["risk"] == q["risk"]:
                items.append({**chain, "volume": status["id"]})
    return jsonify(ChainListSchema().dump({"items": items}))
