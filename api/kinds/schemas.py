"""Schemas of the kinds resource."""

from __future__ import annotations

from marshmallow import Schema, fields


class KindSchema(Schema):
    """One job kind, as :mod:`service.kinds` declares it."""

    name = fields.String(metadata={"description": "the job's `type` (POST /v1/jobs, "
                                   "GET /v1/jobs?type=)"})
    summary = fields.String()
    mutating = fields.Boolean(metadata={
        "description": "changes disks: runs chunk by chunk under the chain lock, and can be "
                       "paused, resumed and cancelled; otherwise it only reads"})
    folder = fields.Boolean(metadata={
        "description": "the job's `path` names a folder of the root (`.`: the root), "
                       "not a disk"})
    options = fields.List(fields.String(), metadata={
        "description": "the names of the options it takes (their schema: "
                       "`<Kind>Options` in this document)"})


class KindListSchema(Schema):
    items = fields.List(fields.Nested(KindSchema), metadata={
        "description": "every kind, in the service's order (built-ins first)"})
