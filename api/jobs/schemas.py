"""Marshmallow schemas of the jobs resource (unknown fields are rejected everywhere)."""

from __future__ import annotations

import functools
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service import kinds
from service.errors import PathRefused
from service.paths import validate_relative
from service.states import STATES
from vhdlib.ops import OPERATIONS as OPERATION_CLASSES
from vhdlib.ops.options import Option

JOB_TYPES = kinds.names()

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


UUID = validate.Regexp(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$",
                       error="a UUID like 6f3c0a1e-5d2b-4c8e-9a7f-0123456789ab")


def _field(opt: Option) -> fields.Field:
    """The marshmallow field of one vhdlib option declaration."""
    meta: dict[str, Any] = {"description": opt.help}
    if opt.default is not None:
        meta["default"] = opt.default
    if opt.form == "path":
        return RelPath(required=opt.required, metadata=meta)
    checks: list[Any] = []
    allowed = opt.allowed
    if allowed:
        checks.append(validate.OneOf(list(allowed)))
    if opt.minimum is not None or opt.maximum is not None:
        checks.append(validate.Range(opt.minimum, opt.maximum))
    if opt.form == "uuid":
        checks.append(UUID)
    kind = {bool: fields.Boolean, int: fields.Integer}.get(opt.type, fields.String)
    return kind(required=opt.required, validate=checks, metadata=meta)


def _excludes(declared: tuple[Option, ...]) -> Any:
    pairs = sorted({tuple(sorted((o.name, x))) for o in declared for x in o.excludes})

    @validates_schema
    def check(self: Schema, data: dict[str, Any], **_: Any) -> None:
        for a, b in pairs:
            if data.get(a) and data.get(b):
                raise ValidationError(f"{a} and {b} exclude each other")
    return check


@functools.lru_cache(maxsize=64)
def _build(name: str, declared: tuple[Option, ...], choices: tuple[Any, ...],
           extra: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> type[Schema]:
    # ``choices`` (every option's current choices) is only the cache key: a format
    # registered later gets a new schema.
    attrs: dict[str, Any] = {o.name: _field(o) for o in declared}
    for field_name, allowed in extra:
        attrs[field_name] = fields.String(required=True, validate=validate.OneOf(allowed))
    attrs["_excludes"] = _excludes(declared)
    return Strict.from_dict(attrs, name=name)


def options_schema(job_type: str, *, plan: bool = False) -> type[Schema]:
    """The options schema of ``job_type`` (``plan``: of planning that operation, which adds
    ``operation``), derived from vhdlib's declarations."""
    declared = kinds.get(job_type).declared
    title = job_type.capitalize()
    key = tuple(o.allowed for o in declared)
    if plan:
        return _build(f"Plan{title}OptionsSchema", declared, key,
                      (("operation", (job_type,)),))
    return _build(f"{title}OptionsSchema", declared, key)


OPERATIONS = tuple(OPERATION_CLASSES)
#: Job types whose options are a vhdlib declaration (plan: ``operation`` + its options).
OPTION_TYPES = tuple(t for t in JOB_TYPES if t != "plan")


def option_schemas() -> list[type[Schema]]:
    """Every type's options schema, for the OpenAPI document."""
    return [options_schema(t) for t in OPTION_TYPES] + \
        [options_schema(op, plan=True) for op in OPERATIONS]


def load_options(job_type: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``options`` for ``job_type`` (plan: ``operation`` + that operation's)."""
    if job_type == "plan":
        if not isinstance(options, dict):
            raise ValidationError({"options": ["an object"]})
        opts = dict(options)
        op = opts.pop("operation", None)
        if op not in OPERATIONS:
            raise ValidationError({"options": {"operation": [f"one of {list(OPERATIONS)}"]}})
        try:
            return {"operation": op, **options_schema(op)().load(opts)}
        except ValidationError as e:
            raise ValidationError({"options": e.messages}) from e
    try:
        loaded: dict[str, Any] = options_schema(job_type)().load(options)
    except ValidationError as e:
        raise ValidationError({"options": e.messages}) from e
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
    # Documented per type (the schemas derived from vhdlib's declarations), not free-form.
    options = fields.Raw(load_default=dict, metadata={
        "description": "the options of the job's type: " + ", ".join(
            f"{t} -> {t.capitalize()}Options" for t in OPTION_TYPES)
        + "; plan -> Plan<Operation>Options (operation + that operation's options)",
        "anyOf": [{"$ref": f"#/components/schemas/{t.capitalize()}Options"}
                  for t in OPTION_TYPES]
        + [{"$ref": f"#/components/schemas/Plan{t.capitalize()}Options"} for t in OPERATIONS]})

    #: Components the document needs beside this schema (see api.openapi).
    openapi_components = staticmethod(option_schemas)
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
