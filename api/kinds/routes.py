"""``GET /v1/kinds``: every job kind, from the service's registry (the dashboard's type
filter reads it, so no client keeps a list of its own)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.auth import requires
from api.kinds.schemas import KindListSchema
from api.openapi import operation
from service import kinds

bp = Blueprint("kinds", __name__, url_prefix="/v1/kinds")


@bp.get("")
@requires("jobs:read")
@operation("List the job kinds (the values of a job's type)", tags=("jobs",),
           responses={200: ("Every job kind", KindListSchema)})
def list_kinds() -> Response:
    every = [kinds.get(name) for name in kinds.names()]
    return jsonify(KindListSchema().dump({"items": [
        {"name": k.name, "summary": k.summary, "mutating": k.mutating, "folder": k.folder,
         "options": list(k.options)} for k in every]}))
