"""Schemas of the health resource."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class HealthSchema(Schema):
    """``/healthz`` and ``/readyz`` when all is well."""

    status = fields.String(required=True, validate=validate.OneOf(["ok", "ready"]))
