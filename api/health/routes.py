"""``/healthz`` (alive), ``/readyz`` (Redis reachable), ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from api.auth import requires
from api.openapi import operation
from api.problems import problem
from service import hosts
from service.job import CHUNK_BUCKETS
from service.store import JobStore

bp = Blueprint("health", __name__)


def _store() -> JobStore:
    s: JobStore = current_app.extensions["vhdmend_store"]
    return s


@bp.get("/healthz")
@operation("Liveness (no token needed)", tags=("health",), responses={200: ("Alive", None)})
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@operation("Readiness: Redis answers (no token needed)", tags=("health",),
           responses={200: ("Ready", None), 503: ("Redis unreachable", None)})
def readyz() -> Response:
    try:
        _store().ping()
    except Exception as e:
        return problem(503, "unavailable", "Not ready", f"Redis unreachable: {e}")
    return jsonify({"status": "ready"})


@bp.get("/metrics")
@requires("jobs:read")
@operation("Prometheus metrics", tags=("health",), media="text/plain",
           responses={200: ("Prometheus text format 0.0.4", None)})
def metrics() -> Response:
    s = _store()
    counts = s.counts()
    counters, hist = s.metrics()
    lines = ["# HELP vhdmend_jobs Jobs by state.", "# TYPE vhdmend_jobs gauge"]
    lines += [f'vhdmend_jobs{{state="{k}"}} {v}' for k, v in counts.items()]
    for name, help_text in (
            ("jobs_created", "Jobs submitted."),
            ("bytes_processed", "Bytes processed by operations."),
            ("webhook_deliveries", "Webhook attempts answered 2xx."),
            ("webhook_failures", "Webhook attempts that failed.")):
        lines += [f"# HELP vhdmend_{name}_total {help_text}",
                  f"# TYPE vhdmend_{name}_total counter",
                  f"vhdmend_{name}_total {counters.get(name, 0)}"]
    lines += ["# HELP vhdmend_chunk_seconds Time per operation chunk.",
              "# TYPE vhdmend_chunk_seconds histogram"]
    for le in CHUNK_BUCKETS:
        lines.append(f'vhdmend_chunk_seconds_bucket{{le="{le}"}} {int(hist.get(str(le), 0))}')
    lines.append(f'vhdmend_chunk_seconds_bucket{{le="+Inf"}} {int(hist.get("+Inf", 0))}')
    lines.append(f"vhdmend_chunk_seconds_sum {hist.get('sum', 0.0)}")
    lines.append(f"vhdmend_chunk_seconds_count {int(hist.get('+Inf', 0))}")
    workers = hosts.workers(s)
    lines += ["# HELP vhdmend_workers Live workers per host.", "# TYPE vhdmend_workers gauge"]
    per_host: dict[str, int] = {}
    for w in workers:
        per_host[w["host"]] = per_host.get(w["host"], 0) + 1
    lines += [f'vhdmend_workers{{host="{h}"}} {n}' for h, n in sorted(per_host.items())]
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
