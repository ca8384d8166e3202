"""``/healthz`` (alive), ``/readyz`` (Redis reachable), ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from api.auth import requires
from api.health.schemas import HealthSchema
from api.openapi import operation
from api.problems import problem
from service.store import JobStore

bp = Blueprint("health", __name__)


def _store() -> JobStore:
    s: JobStore = current_app.extensions["vhdmend_store"]
    return s


@bp.get("/healthz")
@operation("Liveness (no token needed)", tags=("health",), responses={200: ("Alive", HealthSchema)})
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@operation("Readiness: Redis answers (no token needed)", tags=("health",),
           responses={200: ("Ready", HealthSchema), 503: ("Redis unreachable", None)})
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
    from prometheus_client import CONTENT_TYPE_LATEST

    from api.health.metrics import exposition
    return Response(exposition(_store()), content_type=CONTENT_TYPE_LATEST)
