"""Marshmallow schemas of the jobs resource (unknown fields are rejected everywhere)."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.errors import PathRefused
from service.kinds import names as kind_names
from service.paths import validate_relative
from service.states import STATES

JOB_TYPES = kind_names()

NAME = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                       error="1-64 letters, digits, '.', '_' or '-'")


class Strict(Schema):
    class Meta:
        unknown = RAISE


def _relative(value: str) -> None:
    try:
        validate_relative(value)
    except PathRefused as e:
        raise ValidationError(e.detail) from e


class RelPath(fields.String):
    """A path relative to a storage root (no '..', not absolute)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(validate=[validate.Length(1, 4096), _relative], **kw)


DISK_TYPE = validate.OneOf(["fixed", "dynamic"])
FORMAT = validate.OneOf(["vhd", "vhdx", "raw"])
BLOCK = validate.OneOf([1 << 20, 2 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20, 128 << 20,
                        256 << 20])


class InspectOptionsSchema(Strict):
    lenient = fields.Boolean()




def _reclaim() -> fields.String:
    """``--reclaim``: zeros (default) or fs (also blocks the guest's file systems free)."""
    return fields.String(validate=validate.OneOf(["zeros", "fs"]), metadata={
        "description": "zeros: drop all-zero blocks (default); fs: also drop blocks the "
                       "guest's NTFS/ext2/3/4 file systems mark wholly free"})


class ScanOptionsSchema(Strict):
    """``scan`` takes no options (its path names a folder: ``.`` for the root)."""


class CompactOptionsSchema(Strict):
    lenient = fields.Boolean()
    reclaim = _reclaim()


class MergeOptionsSchema(Strict):
    into = RelPath(metadata={"description": "the layer to merge into (default: the parent)"})
    force = fields.Boolean()
    archive = RelPath(metadata={"description": "folder to move retired layers to"})
    delete = fields.Boolean()
    lenient = fields.Boolean()


UUID = validate.Regexp(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$",
                       error="a UUID like 6f3c0a1e-5d2b-4c8e-9a7f-0123456789ab")
#: Explicit ids of the output make it reproducible (the same bytes on every run).
OUTPUT_UUID = {"description": "the output disk's UUID (default: a new one)"}
OUTPUT_TIMESTAMP = {"description": "the output's creation time, Unix seconds (default: now)"}


#: Owner, mode, ACL and xattrs of the new disk (vhdlib.ops.carry).
ATTR_FROM = {"description": "'base': the output gets the base disk's owner, group, mode, "
             "ACL and xattrs (in place they are always carried over)"}
ATTR_DROP = {"description": "go ahead when an attribute cannot be carried over (the result "
             "lists what was dropped) instead of failing"}


class ConvertOptionsSchema(Strict):
    output = RelPath(required=True)
    type = fields.String(validate=DISK_TYPE)
    format = fields.String(validate=FORMAT)
    block_size = fields.Integer(validate=BLOCK)
    sparse = fields.Boolean()
    lenient = fields.Boolean()
    reclaim = _reclaim()
    uuid = fields.String(validate=UUID, metadata=OUTPUT_UUID)
    timestamp = fields.Integer(validate=validate.Range(946684800, 4102444800),
                               metadata=OUTPUT_TIMESTAMP)
    attributes_from = fields.String(validate=validate.OneOf(["base"]), metadata=ATTR_FROM)
    drop_attributes = fields.Boolean(metadata=ATTR_DROP)


class RemediateOptionsSchema(Strict):
    output = RelPath()
    type = fields.String(validate=DISK_TYPE)
    format = fields.String(validate=FORMAT)
    archive = RelPath()
    delete = fields.Boolean()
    force = fields.Boolean()
    block_size = fields.Integer(validate=BLOCK)
    sparse = fields.Boolean()
    lenient = fields.Boolean()
    reclaim = _reclaim()
    uuid = fields.String(validate=UUID, metadata=OUTPUT_UUID)
    timestamp = fields.Integer(validate=validate.Range(946684800, 4102444800),
                               metadata=OUTPUT_TIMESTAMP)
    attributes_from = fields.String(validate=validate.OneOf(["base"]), metadata=ATTR_FROM)
    drop_attributes = fields.Boolean(metadata=ATTR_DROP)


OPTIONS: dict[str, type[Schema]] = {
    "inspect": InspectOptionsSchema, "compact": CompactOptionsSchema,
    "merge": MergeOptionsSchema, "convert": ConvertOptionsSchema,
    "remediate": RemediateOptionsSchema, "scan": ScanOptionsSchema,
}
OPERATIONS = ("merge", "compact", "convert", "remediate")


def load_options(job_type: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``options`` for ``job_type`` (plan: ``operation`` + that operation's)."""
    if job_type == "plan":
        opts = dict(options)
        op = opts.pop("operation", None)
        if op not in OPERATIONS:
            raise ValidationError({"options": {"operation": [f"one of {list(OPERATIONS)}"]}})
        try:
            return {"operation": op, **OPTIONS[op]().load(opts)}
        except ValidationError as e:
            raise ValidationError({"options": e.messages}) from e
    try:
        loaded: dict[str, Any] = OPTIONS[job_type]().load(options)
    except ValidationError as e:
        raise ValidationError({"options": e.messages}) from e
    if loaded.get("archive") and loaded.get("delete"):
        raise ValidationError({"options": ["archive and delete exclude each other"]})
    return loaded


class CallbackSchema(Strict):
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                     validate=validate.Length(max=2048))
    secret = fields.String(required=True, validate=validate.Length(16, 256), load_only=True,
                           metadata={"description": "HMAC key (Standard Webhooks "
                                     "'whsec_<base64>' or any string); never shown again"})


class JobCreateSchema(Strict):
    """``POST /v1/jobs``."""

    type = fields.String(required=True, validate=validate.OneOf(JOB_TYPES))
    host = fields.String(required=True, validate=NAME)
    root = fields.String(required=True, validate=NAME)
    path = RelPath(required=True)
    options = fields.Dict(keys=fields.String(), load_default=dict,
                          metadata={"description": "per type: see *OptionsSchema"})
    external_ref = fields.String(validate=validate.Length(1, 200), allow_none=True)
    callback = fields.Nested(CallbackSchema, allow_none=True)

    @validates_schema(skip_on_field_errors=True)
    def _options(self, data: dict[str, Any], **_: Any) -> None:
        data["options"] = load_options(data["type"], data.get("options") or {})


class ProgressSchema(Schema):
    done = fields.Integer()
    total = fields.Integer()
    percent = fields.Float()
    rate = fields.Float(metadata={"description": "bytes per second"})
    eta_seconds = fields.Float(allow_none=True)
    phase_done = fields.Integer()
    phase_total = fields.Integer()


class ErrorInfoSchema(Schema):
    type = fields.String()
    title = fields.String()
    detail = fields.String()


class CallbackViewSchema(Schema):
    url = fields.String()


class JobSchema(Schema):
    """A job as the API shows it."""

    id = fields.String()
    type = fields.String(validate=validate.OneOf(JOB_TYPES))
    host = fields.String()
    root = fields.String()
    path = fields.String()
    options = fields.Dict()
    state = fields.String(validate=validate.OneOf(STATES))
    phase = fields.String(allow_none=True)
    progress = fields.Nested(ProgressSchema, allow_none=True)
    plan = fields.Dict(allow_none=True)
    result = fields.Dict(allow_none=True)
    attempts = fields.Integer()
    chunks = fields.Integer(metadata={"description": "checkpoints made, over all executions "
                                      "(a resumed job redoes at most the chunk in flight)"})
    error = fields.Nested(ErrorInfoSchema, allow_none=True)
    external_ref = fields.String(allow_none=True)
    requested_by = fields.String(allow_none=True)
    callback = fields.Nested(CallbackViewSchema, allow_none=True)
    reason = fields.String(allow_none=True)
    checkpoint = fields.Boolean(metadata={"description": "a checkpoint exists to resume from"})
    fence = fields.Integer(allow_none=True)
    worker = fields.String(allow_none=True)
    lock_key = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)


class JobListQuerySchema(Strict):
    state = fields.String(validate=validate.OneOf(STATES))
    type = fields.String(validate=validate.OneOf(JOB_TYPES),
                         metadata={"description": "only jobs of this kind"})
    host = fields.String(validate=NAME)
    external_ref = fields.String(validate=validate.Length(1, 200))
    page_token = fields.String(validate=validate.Length(1, 200))
    limit = fields.Integer(validate=validate.Range(1, 200), load_default=50)


class JobListSchema(Schema):
    items = fields.List(fields.Nested(JobSchema))
    next_page_token = fields.String(allow_none=True)


class EventsQuerySchema(Strict):
    start = fields.Integer(validate=validate.Range(0, 1_000_000), load_default=0)


class StreamQuerySchema(Strict):
    interval = fields.Float(validate=validate.Range(0.05, 5.0), load_default=0.5,
                            metadata={"description": "seconds between two looks at the job"})


class EventSchema(Schema):
    class Meta:
        unknown = RAISE

    at = fields.String()
    type = fields.String()


class EventListSchema(Schema):
    items = fields.List(fields.Dict())
    next = fields.Integer(metadata={"description": "pass as ?start= to read newer events"})


class EmptySchema(Strict):
    """An empty JSON object (or no body)."""
