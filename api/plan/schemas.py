"""Schemas of ``POST /v1/plan``."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.jobs.schemas import NAME, OPERATIONS, RelPath, Strict, load_options, options_schema


class PlanRequestSchema(Strict):
    host = fields.String(required=True, validate=NAME)
    root = fields.String(required=True, validate=NAME)
    path = RelPath(required=True)
    operation = fields.String(required=True, validate=validate.OneOf(OPERATIONS))
    options = fields.Raw(load_default=dict, metadata={
        "description": "the operation's options (as for a job of that type)",
        "anyOf": [{"$ref": f"#/components/schemas/{op.capitalize()}Options"}
                  for op in OPERATIONS]})

    #: The per-operation options schemas the document refers to (see api.openapi).
    openapi_components = staticmethod(lambda: [options_schema(op) for op in OPERATIONS])

    @validates_schema(skip_on_field_errors=True)
    def _options(self, data: dict[str, Any], **_: Any) -> None:
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise ValidationError({"options": ["an object"]})
        data["options"] = load_options("plan", {"operation": data["operation"], **options})


class PlanResponseSchema(Schema):
    job_id = fields.String()
    plan = fields.Dict(metadata={"description": "steps, bytes, exact space per volume"})
