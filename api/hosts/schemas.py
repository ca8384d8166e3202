"""Schemas of the hosts resource."""

from __future__ import annotations

from marshmallow import Schema, fields


class RootSpaceSchema(Schema):
    free_bytes = fields.Integer()
    total_bytes = fields.Integer()


class WorkerSchema(Schema):
    worker = fields.String(metadata={"description": "opaque worker id (stable per process)"})
    queue = fields.String(allow_none=True)
    last_heartbeat = fields.String()


class HostSchema(Schema):
    host = fields.String()
    roots = fields.Dict(keys=fields.String(), values=fields.Nested(RootSpaceSchema))
    last_heartbeat = fields.String()
    workers = fields.List(fields.Nested(WorkerSchema))
    running_jobs = fields.List(fields.String())


class HostListSchema(Schema):
    items = fields.List(fields.Nested(HostSchema))
