"""``GET /v1/whoami``: who the bearer token is and what it may do."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from marshmallow import Schema, fields

from api.auth import principal, requires
from api.openapi import operation

bp = Blueprint("whoami", __name__, url_prefix="/v1/whoami")


class WhoamiSchema(Schema):
    name = fields.String(metadata={"description": "the token's name in the config"})
    scopes = fields.List(fields.String(), metadata={
        "description": "jobs:read, jobs:write, admin (admin implies the others)"})
    can_write = fields.Boolean(metadata={"description": "may submit, cancel, pause, resume"})


@bp.get("")
@requires("jobs:read")
@operation("The calling token's name and scopes", tags=("auth",),
           responses={200: ("The token", WhoamiSchema)})
def whoami() -> Response:
    entry = principal()
    scopes = sorted(entry.scopes)
    return jsonify(WhoamiSchema().dump({
        "name": entry.name, "scopes": scopes,
        "can_write": "admin" in entry.scopes or "jobs:write" in entry.scopes}))
