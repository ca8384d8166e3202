"""Schemas of the chains resource (a chain is shown as in a volume: see api/volumes)."""

from __future__ import annotations

from marshmallow import Schema, fields

from api.jobs.schemas import NAME, Strict
from api.volumes.schemas import RISKS, ChainSchema


class ChainListSchema(Schema):
    items = fields.List(fields.Nested(ChainSchema))


class ChainQuerySchema(Strict):
    host = fields.String(validate=NAME)
    risk = fields.String(validate=RISKS)
