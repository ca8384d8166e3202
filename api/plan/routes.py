"""``POST /v1/plan``: a dry run on the host's worker (the API never opens a disk)."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from api.auth import requires
from api.jobs.routes import RETRY_AFTER, job_response, json_body, store, submit
from api.jobs.schemas import JobSchema
from api.openapi import operation
from api.plan.schemas import PlanRequestSchema, PlanResponseSchema
from api.problems import ProblemSchema, problem
from service import hosts
from service.errors import NoLiveWorker
from service.problems import title_for

bp = Blueprint("plan", __name__, url_prefix="/v1/plan")


@bp.post("")
@requires("jobs:write")
@operation("Plan an operation without running it", body=PlanRequestSchema, tags=("plan",),
           responses={200: ("The plan", PlanResponseSchema),
                      202: ("The worker has not answered yet; poll the job", JobSchema),
                      422: ("The plan failed (or the request is invalid)", ProblemSchema),
                      503: ("No live worker of the host (see Retry-After)", ProblemSchema)})
def plan() -> Response:
    # jobs:write: a plan makes the host's worker open and read disks (D10).
    data = PlanRequestSchema().load(json_body())
    if not any(w["host"] == data["host"] for w in hosts.workers(store())):
        raise NoLiveWorker(f"no worker of host {data['host']!r} is heartbeating; a plan "
                           "needs one", retry_after=int(RETRY_AFTER))
    job, _ = submit({"type": "plan", "host": data["host"], "root": data["root"],
                     "path": data["path"], "options": data["options"]}, None)
    settings = current_app.config["VHDMEND_SETTINGS"]
    deadline = time.monotonic() + settings.plan_timeout
    delay = 0.02
    while time.monotonic() < deadline:
        job = store().get(job.id)
        if job.terminal:
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    if job.state == "succeeded":
        return jsonify(PlanResponseSchema().dump({"job_id": job.id, "plan": job.plan or {}}))
    if job.terminal:
        err = job.error or {}
        code = str(err.get("type") or "plan_failed")
        return problem(422, code, title_for(code, str(err.get("title") or "")),
                       f"{err.get('detail', '')} (job {job.id})".strip())
    resp = job_response(job, 202)
    resp.headers["Location"] = f"/v1/jobs/{job.id}"
    resp.headers["Retry-After"] = RETRY_AFTER
    return resp
