"""RFC 9457 problem details: one envelope, one handler for every error.

Every error response, 404 and 405 from routing, 422 from validation and 500 from a bug
included, is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail``
(and ``errors`` for validation failures).
"""

from __future__ import annotations

import html
import logging
from typing import Any

from flask import Blueprint, Flask, Response, json, request
from marshmallow import RAISE, Schema, ValidationError, fields
from werkzeug.exceptions import HTTPException

from service.errors import NotFound, ServiceError
from service.problems import CATALOGUE, description, title_for

log = logging.getLogger(__name__)

#: Problem types are pages this service serves: ``<base URL>/problems/<slug>``.
PROBLEM_PATH = "/problems/"
MEDIA_TYPE = "application/problem+json"

bp = Blueprint("problems", __name__)


def type_uri(code: str) -> str:
    """The absolute URI of problem ``code`` (resolves to :func:`problem_page`)."""
    root = request.url_root.rstrip("/") if request else ""
    return root + PROBLEM_PATH + code


class ProblemSchema(Schema):
    """An RFC 9457 problem document."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, metadata={
        "description": "URI of the kind of problem: a page at /problems/<slug>"})
    title = fields.String(required=True, metadata={"description": "a human summary"})
    status = fields.Integer(required=True)
    detail = fields.String()
    instance = fields.String(allow_none=True)
    errors = fields.Dict(metadata={"description": "field -> messages (validation only)"})


def problem(status: int, code: str, title: str, detail: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {"type": type_uri(code), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.path if request else None
    body.update(extra)
    resp = Response(json.dumps(body), status=status, mimetype=MEDIA_TYPE)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _code_for(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
            413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
            429: "too_many_requests"}.get(status, f"http_{status}")


def handle(e: Exception) -> Response:
    """The one error handler."""
    if isinstance(e, ValidationError):
        messages = e.messages if isinstance(e.messages, dict) else {"_schema": e.messages}
        return problem(422, "invalid_request", "Invalid request",
                       "the request does not match the schema", errors=messages)
    if isinstance(e, ServiceError):
        return problem(e.status, e.code, title_for(e.code, type(e).__name__), e.detail,
                       headers=getattr(e, "headers", None))
    if _redis_unreachable(e):
        # A store call outside the retrying paths met Redis down (a failover, a restart):
        # the service is unavailable for a moment, not broken.
        return problem(503, "unavailable", title_for("unavailable"),
                       f"Redis unavailable (a failover or restart?): {e}",
                       headers={"Retry-After": "2"})
    if isinstance(e, HTTPException):
        status = e.code or 500
        headers = {k: v for k, v in e.get_headers() if k.lower() != "content-type"}
        code = _code_for(status)
        return problem(status, code, title_for(code, e.name), e.description, headers=headers)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem(500, "internal", title_for("internal"),
                   "an unexpected error occurred; it has been logged")


def _redis_unreachable(e: Exception) -> bool:
    import redis
    return isinstance(e, redis.ConnectionError | redis.TimeoutError)


@bp.get("/problems/<slug>")
def problem_page(slug: str) -> Response:
    """The page a problem ``type`` URI resolves to."""
    text = description(slug)
    if text is None:
        raise NotFound(f"no problem type {slug!r}")
    title = html.escape(CATALOGUE[slug][0])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{html.escape(text)}</p><p>Problem type "
            f"<code>{html.escape(slug)}</code> of the vhdmend API.</p></body></html>")
    return Response(page, mimetype="text/html")


def init_app(app: Flask) -> None:
    app.register_error_handler(Exception, handle)
    app.register_blueprint(bp)
