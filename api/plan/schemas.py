"""Schemas of ``POST /v1/plan``."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate, validates_schema

from api.jobs.schemas import NAME, OPERATIONS, RelPath, Strict, load_options


class PlanRequestSchema(Strict):
    host = fields.String(required=True, validate=NAME)
    root = fields.String(required=True, validate=NAME)
    path = RelPath(required=True)
    operation = fields.String(required=True, validate=validate.OneOf(OPERATIONS))
    options = fields.Dict(keys=fields.String(), load_default=dict)

    @validates_schema(skip_on_field_errors=True)
    def _options(self, data: dict[str, Any], **_: Any) -> None:
        data["options"] = load_options("plan", {"operation": data["operation"],
                                                **(data.get("options") or {})})


class PlanResponseSchema(Schema):
    job_id = fields.String()
    plan = fields.Dict(metadata={"description": "steps, bytes, exact space per volume"})
