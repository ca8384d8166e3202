"""``/v1/jobs``: submit, read, list, cancel/pause/resume, events (and an SSE stream)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from marshmallow import ValidationError
from ulid import ULID

from api.auth import principal, requires
from api.jobs.schemas import (
    EmptySchema,
    EventListSchema,
    EventsQuerySchema,
    JobCreateSchema,
    JobListQuerySchema,
    JobListSchema,
    JobSchema,
    StreamQuerySchema,
)
from api.openapi import operation
from service import callbacks, hosts, states
from service.errors import Conflict, NotFound, UnknownRoot
from service.job import Job, new_job, public_json
from service.store import JobStore

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

#: The operations on one job (OpenAPI links from a created job to them).
JOB_OPERATIONS = ("jobs_get_job", "jobs_cancel_job", "jobs_pause_job", "jobs_resume_job",
                  "jobs_job_events")  # not the stream: it lasts until the job ends

#: Seconds a client should wait before polling a new job.
RETRY_AFTER = "2"


def store() -> JobStore:
    s: JobStore = current_app.extensions["vhdmend_store"]
    return s


def dispatch(job: Job) -> None:
    """Nudge the host's worker; a failure leaves the job queued for the reaper to nudge."""
    try:
        current_app.extensions["vhdmend_dispatch"](job.id, job.host)
    except Exception as e:
        log.warning("job %s: could not reach the broker (%s); the reaper will retry",
                    job.id, e)


#: Deepest nesting a body may have (ours is 4 deep); checked before marshmallow recurses.
MAX_DEPTH = 32


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counted without recursion up to ``limit`` + 1."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [v for x in level if isinstance(x, (dict, list))
                 for v in (x.values() if isinstance(x, dict) else x)]
    return depth if not level else limit + 1


def json_body(required: bool = True) -> dict[str, Any]:
    """The request's JSON object, or a 422 problem (never a RecursionError: D1)."""
    if not request.data and not required:
        return {}
    if not request.is_json:
        raise ValidationError({"_schema": ["send a JSON object with "
                                           "Content-Type: application/json"]})
    try:
        data = json.loads(request.get_data())
    except (ValueError, RecursionError):
        raise ValidationError({"_schema": ["the body is not valid JSON (or nests deeper "
                                           f"than {MAX_DEPTH} levels)"]}) from None
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["the body must be a JSON object"]})
    if json_depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ValidationError({"_schema": [f"the body nests deeper than {MAX_DEPTH} levels"]})
    return data


def job_response(job: Job, status: int = 200) -> Response:
    # ``to_public`` already has JobSchema's shape (the schema documents it); skipping the
    # marshmallow dump keeps status polls cheap (see bench/service).
    resp = jsonify(job.to_public())
    resp.status_code = status
    return resp


def valid_id(job_id: str) -> str:
    try:
        ULID.from_str(job_id)
    except ValueError as e:
        raise NotFound(f"no job {job_id}") from e
    return job_id


def check_root(host: str, root: str) -> str | None:
    """Refuse a root the host's live workers do not have; a reason when none is live."""
    s = store()
    live = [w for w in hosts.workers(s) if w["host"] == host]
    if not live:
        return f"no worker of host {host!r} is registered yet; the job waits for one"
    if not any(root in w["roots"] for w in live):
        known = sorted({r for w in live for r in w["roots"]})
        raise UnknownRoot(f"host {host!r} has no root {root!r} (it has {known})")
    return None


def submit(data: dict[str, Any], idem_key: str | None) -> tuple[Job, bool]:
    """Create (or find, by Idempotency-Key) the job ``data`` describes and nudge it."""
    who = principal().name
    if data.get("callback"):
        settings = current_app.config["VHDMEND_SETTINGS"]
        callbacks.check(data["callback"]["url"], data["callback"]["secret"],
                        settings.webhook_allow_hosts)
    reason = check_root(data["host"], data["root"])
    job = new_job(data["type"], data["host"], data["root"], data["path"],
                  options=data.get("options"), external_ref=data.get("external_ref"),
                  requested_by=who, callback=data.get("callback"))
    if reason:
        from dataclasses import replace
        job = replace(job, reason=reason)
    idem = None
    if idem_key is not None:
        fingerprint = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        idem = (f"{who}:{idem_key}", fingerprint)
    job, created = store().create(job, idempotency=idem)
    if created:
        dispatch(job)
    return job, created


@bp.post("")
@requires("jobs:write")
@operation("Submit a job", body=JobCreateSchema, tags=("jobs",),
           responses={202: ("Accepted; poll the Location", JobSchema)},
           headers={"Idempotency-Key": "same key and body: the same job; other body: 422"},
           links={202: JOB_OPERATIONS})
def create_job() -> Response:
    idem_key = request.headers.get("Idempotency-Key")
    if idem_key is not None and not (0 < len(idem_key) <= 255):
        raise ValidationError({"Idempotency-Key": ["1 to 255 characters"]})
    data = JobCreateSchema().load(json_body())
    job, _ = submit(data, idem_key)
    resp = job_response(job, 202)
    resp.headers["Location"] = f"/v1/jobs/{job.id}"
    resp.headers["Retry-After"] = RETRY_AFTER
    return resp


@bp.get("")
@requires("jobs:read")
@operation("List jobs, newest first", query=JobListQuerySchema, tags=("jobs",),
           responses={200: ("A page of jobs", JobListSchema)})
def list_jobs() -> Response:
    q = JobListQuerySchema().load(request.args.to_dict())
    jobs, token = store().find(state=q.get("state"), host=q.get("host"),
                               external_ref=q.get("external_ref"), type=q.get("type"),
                               limit=q["limit"],
                               page_token=q.get("page_token"))
    return jsonify(JobListSchema().dump({"items": [j.to_public() for j in jobs],
                                         "next_page_token": token}))


@bp.get("/<job_id>")
@requires("jobs:read")
@operation("Read a job", tags=("jobs",), responses={200: ("The job", JobSchema)})
def get_job(job_id: str) -> Response:
    # The hot path (status polls): one HGETALL, JSON spliced from the stored fields.
    return Response(public_json(store().get_raw(valid_id(job_id))), mimetype="application/json")


def _action(job_id: str, action: str) -> Response:
    EmptySchema().load(json_body(required=False))
    s = store()
    job = s.get(valid_id(job_id))
    # The rules (which state allows what, and where it leads) are service.states'.
    move = states.action(action, job.state, has_checkpoint=job.checkpoint is not None)
    job = s.transition(job.id, [move.source], move.target,
                       set_fields={"reason": None} if action == "resume" else None,
                       event={"by": principal().name})
    if move.nudge:
        dispatch(job)
    return job_response(job, 202)


def _action_doc(summary: str) -> Any:
    return operation(summary, tags=("jobs",),
                     responses={202: ("Accepted: takes effect between chunks", JobSchema),
                                409: ("Not possible in the job's state", None)})


@bp.post("/<job_id>/cancel")
@requires("jobs:write")
@_action_doc("Cancel a job (between chunks; originals stay valid)")
def cancel_job(job_id: str) -> Response:
    return _action(job_id, "cancel")


@bp.post("/<job_id>/pause")
@requires("jobs:write")
@_action_doc("Pause a job (between chunks; resumable)")
def pause_job(job_id: str) -> Response:
    return _action(job_id, "pause")


@bp.post("/<job_id>/resume")
@requires("jobs:write")
@_action_doc("Resume a paused job")
def resume_job(job_id: str) -> Response:
    return _action(job_id, "resume")


@bp.get("/<job_id>/events")
@requires("jobs:read")
@operation("A job's history: state changes, attempts, webhook deliveries", tags=("jobs",),
           query=EventsQuerySchema, responses={200: ("Events, oldest first", EventListSchema)})
def job_events(job_id: str) -> Response:
    q = EventsQuerySchema().load(request.args.to_dict())
    items = store().events(valid_id(job_id), q["start"])
    return jsonify({"items": items, "next": q["start"] + len(items)})


#: Milliseconds an SSE client waits before reconnecting (the stream's ``retry:`` field).
SSE_RETRY_MS = 2000


def event_id(job: Job) -> int:
    """The SSE id of a view of ``job``: its update time in integer microseconds, so ids
    grow with every change and a reconnecting client's ``Last-Event-ID`` says what it saw."""
    return round(job.updated_at * 1_000_000)


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return -1
    if not raw.isdigit() or len(raw) > 20:
        raise ValidationError({"Last-Event-ID": ["an id this stream sent (an integer)"]})
    return int(raw)


@bp.get("/<job_id>/stream")
@requires("jobs:read")
@operation("Server-sent events: the job on every change until it finishes", tags=("jobs",),
           query=StreamQuerySchema, media="text/event-stream",
           headers={"Last-Event-ID": "resume after this event id (no event repeats)"},
           responses={200: ("An SSE stream (text/event-stream): first `retry: 2000`, then "
                            "per change `event: job`, `id: <integer, increasing>` and "
                            "`data: <the job as JSON>`; it ends after a finished state. "
                            "Reconnect with `Last-Event-ID` to resume. The schema is one "
                            "event; its `data` is a Job.", JobSchema)})
def job_stream(job_id: str) -> Response:
    q = StreamQuerySchema().load(request.args.to_dict())
    after = _last_event_id()
    s = store()
    first = s.get(valid_id(job_id))
    interval: float = q["interval"]
    # A stream ends after this long; the client reconnects with Last-Event-ID (no repeat).
    until = time.monotonic() + float(current_app.config.get("VHDMEND_STREAM_MAX_SECONDS", 300))

    def events() -> Iterator[str]:
        retry = f"retry: {SSE_RETRY_MS}\n"  # with the first event (an event without data
        last = None                           # would be one that violates its schema)
        seen = after
        job: Job | None = first
        while job is not None:
            view = JobSchema().dump(job.to_public())
            key = (view["state"], view.get("progress"), view.get("phase"))
            eid = event_id(job)
            if key != last and eid > seen:
                last, seen = key, eid
                yield f"{retry}event: job\nid: {eid}\ndata: {json.dumps(view)}\n\n"
                retry = ""
            if job.terminal or time.monotonic() >= until:
                return
            time.sleep(interval)
            try:
                job = s.get(job_id)
            except (NotFound, Conflict):
                return

    return Response(stream_with_context(events()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
