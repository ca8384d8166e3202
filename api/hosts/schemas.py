"""Schemas of the hosts resource."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

HOST_STATES = ("live", "stale")


class RootSpaceSchema(Schema):
    free_bytes = fields.Integer()
    total_bytes = fields.Integer()


class WorkerSchema(Schema):
    worker = fields.String(metadata={"description": "opaque worker id (stable per process)"})
    queue = fields.String(allow_none=True)
    last_heartbeat = fields.String()
    state = fields.String(validate=validate.OneOf(HOST_STATES), metadata={
        "description": "`stale`: no heartbeat within the worker's window (it died or froze)"})
    seconds_since_heartbeat = fields.Float(validate=validate.Range(min=0))


class HostSchema(Schema):
    host = fields.String()
    state = fields.String(validate=validate.OneOf(HOST_STATES), metadata={
        "description": "`live` while any worker of the host heartbeats; `stale` when all "
                       "stopped (its workers are then the stale ones, with their last "
                       "heartbeat); a host whose workers stopped cleanly is not listed"})
    seconds_since_heartbeat = fields.Float(validate=validate.Range(min=0), metadata={
        "description": "seconds since the newest heartbeat of the host's workers"})
    roots = fields.Dict(keys=fields.String(), values=fields.Nested(RootSpaceSchema))
    last_heartbeat = fields.String()
    workers = fields.List(fields.Nested(WorkerSchema))
    running_jobs = fields.List(fields.String())


class HostListSchema(Schema):
    items = fields.List(fields.Nested(HostSchema))
