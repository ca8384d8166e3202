"""The status poll's fast lane: ``GET /v1/jobs/<id>`` answered in front of Flask.

A poll is the service's hottest request (bench/service). Of its CPU inside the app, Flask's
request context, routing and response objects took more than the Redis read and the JSON
together. This WSGI middleware answers only the poll that succeeds (a token with
``jobs:read``, an existing job) with the bytes and headers the Flask route gives; every
other request (another path or method, a query string, no or an unknown token, a missing
scope, an unknown id, Redis trouble) goes on to Flask, which answers it as it always has.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from api.auth import allows, bearer
from service.config import Settings, hash_token
from service.errors import ServiceError
from service.job import public_json
from service.store import JobStore

#: A job URL with a canonical ULID (what ids are made of; anything else goes to Flask).
_JOB_URL = re.compile(r"/v1/jobs/([0-7][0-9A-HJKMNP-TV-Z]{25})\Z")

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class StatusPolls:
    """WSGI middleware: successful ``GET /v1/jobs/<id>`` without Flask, the rest to ``app``."""

    def __init__(self, app: Wsgi, settings: Settings, store: JobStore) -> None:
        self.app = app
        self.settings = settings
        self.store = store

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING"):
            m = _JOB_URL.match(environ.get("PATH_INFO", ""))
            body = self._poll(environ, m.group(1)) if m else None
            if body is not None:
                start_response("200 OK", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body)))])
                return [body]
        return self.app(environ, start_response)

    def _poll(self, environ: dict[str, Any], job_id: str) -> bytes | None:
        token = bearer(environ.get("HTTP_AUTHORIZATION", ""))
        if token is None:
            return None
        entry = self.settings.token_for_hash(hash_token(token))
        if entry is None or not allows(entry, "jobs:read"):
            return None
        try:
            return public_json(self.store.get_raw(job_id))
        except ServiceError:  # not found, Redis unavailable: Flask says so, as a problem
            return None
