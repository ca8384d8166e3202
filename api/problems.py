"""RFC 9457 problem details: one envelope, one handler for every error.

Every error response, 404 and 405 from routing, 422 from validation and 500 from a bug
included, is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail``
(and ``errors`` for validation failures).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from marshmallow import Schema, ValidationError, fields
from werkzeug.exceptions import HTTPException

from service.errors import ServiceError

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://vhdmend.example/problems/"
MEDIA_TYPE = "application/problem+json"


class ProblemSchema(Schema):
    """An RFC 9457 problem document."""

    type = fields.String(metadata={"description": "URI naming the kind of problem"})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    instance = fields.String()
    errors = fields.Dict(metadata={"description": "field -> messages (validation only)"})


def problem(status: int, code: str, title: str, detail: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status}
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
        return problem(e.status, e.code, type(e).__name__, e.detail,
                       headers=getattr(e, "headers", None))
    if isinstance(e, HTTPException):
        status = e.code or 500
        headers = {k: v for k, v in e.get_headers() if k.lower() != "content-type"}
        return problem(status, _code_for(status), e.name, e.description, headers=headers)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem(500, "internal", "Internal Server Error",
                   "an unexpected error occurred; it has been logged")


def init_app(app: Flask) -> None:
    app.register_error_handler(Exception, handle)
