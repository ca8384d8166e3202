"""Bearer tokens, stored hashed in the config, with scopes ``jobs:read``, ``jobs:write``,
``admin`` (``admin`` implies the others)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from service.config import Settings, TokenEntry, hash_token
from service.errors import ServiceError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class Unauthorized(ServiceError):
    """No valid bearer token."""

    status = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="vhdmend"'}


class Forbidden(ServiceError):
    """The token lacks the scope this endpoint needs."""

    status = 403
    code = "forbidden"


def principal() -> TokenEntry:
    """The token entry of the current request (after :func:`requires`)."""
    entry: TokenEntry = g.principal
    return entry


def bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def allows(entry: TokenEntry, scope: str) -> bool:
    return scope in entry.scopes or "admin" in entry.scopes


def _authenticate() -> TokenEntry:
    token = bearer(request.headers.get("Authorization", ""))
    if token is None:
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    settings: Settings = current_app.config["VHDMEND_SETTINGS"]
    entry = settings.token_for_hash(hash_token(token))
    if entry is None:
        raise Unauthorized("unknown token")
    return entry


def requires(scope: str) -> Callable[[F], F]:
    """Decorator: the request needs a token with ``scope`` (or ``admin``)."""
    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            entry = _authenticate()
            if not allows(entry, scope):
                raise Forbidden(f"this token lacks the scope {scope!r}")
            g.principal = entry
            return view(*args, **kwargs)
        inner._openapi_scope = scope  # type: ignore[attr-defined]
        return inner  # type: ignore[return-value]
    return wrap
