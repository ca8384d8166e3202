"""Settings of the API and the workers, from a TOML file and the environment.

Precedence: keyword overrides > environment (``VHDMEND_*``) > file (``VHDMEND_CONFIG``) >
defaults. Tokens are stored as SHA-256 hashes only; ``VHDMEND_API_TOKEN`` (plain text, for
the single-machine ``vhdmend up``) is hashed on load and granted every scope.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from service.errors import ClientError

log = logging.getLogger(__name__)

SCOPES = ("jobs:read", "jobs:write", "admin")


def hash_token(token: str) -> str:
    """The stored form of a bearer token: hex SHA-256 (tokens are long random strings)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """A bearer token known by its hash, with a name (for ``requested_by``) and scopes."""

    name: str
    sha256: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with. Immutable; build with :func:`load`."""

    #: One server (``redis://``) or Sentinels (``sentinel://h1:p1;sentinel://h2:p2``, see
    #: :mod:`service.redisconn`) with the master's name and the Sentinels' own password.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_master_name: str = ""
    redis_sentinel_password: str = ""
    #: Key prefix in Redis, so several deployments (or tests) can share one server.
    prefix: str = "vhdmend"
    #: This worker's host name (workers only).
    host: str = ""
    #: Storage roots of this worker: name -> absolute directory.
    roots: Mapping[str, str] = field(default_factory=dict)
    tokens: tuple[TokenEntry, ...] = ()
    #: Hosts webhooks may be sent to (exact host names or IPs; ``*`` allows any).
    webhook_allow_hosts: tuple[str, ...] = ()
    #: Also send a webhook every N percent of progress (0: state changes only).
    webhook_progress_step: int = 25
    #: Give up a webhook delivery this long after its first attempt.
    webhook_max_age: float = 24 * 3600.0
    webhook_backoff_base: float = 5.0
    webhook_timeout: float = 10.0
    #: Finished jobs are deleted this long after they finished.
    retention_seconds: float = 30 * 24 * 3600.0
    #: Lease of a running job and of a chain lock; renewed every third of it.
    lease_seconds: float = 30.0
    #: How often workers reap expired leases, heartbeat and deliver webhooks.
    tick_seconds: float = 2.0
    #: A job failing this many executions (worker crashes) is failed for good.
    max_attempts: int = 5
    #: Progress is written to Redis at most this often (plus every phase change).
    progress_interval: float = 0.5
    #: Operation engine: a module with ``prepare``/``resume`` (vhdlib.ops).
    ops_backend: str = "vhdlib"
    #: Bytes of I/O per chunk, i.e. between checkpoints (0: the engine's default, 256 MiB).
    chunk_bytes: int = 0
    #: Seconds a chunk may last at most (0: the engine's default, 3 s).
    chunk_seconds: float = 0.0
    #: Cap on a job's I/O rate in bytes/s, so a remediation does not starve the VMs served
    #: from the same disks (0: unthrottled). Paced between chunks.
    max_rate: int = 0
    #: How long ``POST /v1/plan`` waits for the worker's answer.
    plan_timeout: float = 30.0
    #: How long the job store retries a lost Redis connection before giving up.
    redis_retry_seconds: float = 60.0
    #: Foresight (service.volumes): free space Hyper-V must keep (guests pause under it).
    reserve: int = 2 << 30
    #: Each worker scans its roots this often, in seconds (0: only on demand).
    scan_interval: float = 300.0
    #: The least-squares window of the growth rate (as ``predict_linear`` rules use).
    projection_window: float = 6 * 3600.0
    #: Projected to reach the reserve within this many seconds: critical / warning.
    critical_within: float = 4 * 3600.0
    warning_within: float = 24 * 3600.0
    #: Alertmanager-shaped risk alerts: receivers, Standard Webhooks secret, repeat (h).
    alert_urls: tuple[str, ...] = ()
    alert_secret: str = ""
    alert_repeat: float = 4.0
    #: The base URL links point at (alerts' ``generatorURL``).
    public_url: str = ""

    def token_for_hash(self, digest: str) -> TokenEntry | None:
        """The token entry whose hash equals ``digest``, if any."""
        import hmac
        found = None
        for entry in self.tokens:
            # Compare every entry in constant time, so timing leaks nothing.
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found


def _parse_roots(spec: str | list[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        parts = spec.split(",") if isinstance(spec, str) else spec
        items = []
        for part in parts:
            part = part.strip()
            if not part:
                continue
            name, sep, path = part.partition("=")
            if not sep or not name or not path:
                raise ClientError(f"root {part!r} is not NAME=PATH")
            items.append((name, path))
    roots: dict[str, str] = {}
    for name, path in items:
        if not os.path.isabs(path):
            path = os.path.abspath(path)
        roots[name] = os.path.realpath(path)
    return roots


def _parse_tokens(spec: str) -> list[TokenEntry]:
    """``name:sha256hex:scope,scope;...``."""
    out = []
    for item in spec.split(";"):
        item = item.strip()
        if not item:
            continue
        name, _, rest = item.partition(":")
        digest, _, scopes = rest.partition(":")
        out.append(TokenEntry(name, digest.lower(), frozenset(s for s in scopes.split(",") if s)))
    return out


def _tokens_from_file(items: list[dict[str, Any]]) -> list[TokenEntry]:
    return [TokenEntry(str(t["name"]), str(t["sha256"]).lower(), frozenset(t.get("scopes", ())))
            for t in items]


_FLOATS = ("webhook_max_age", "webhook_backoff_base", "webhook_timeout", "retention_seconds",
           "lease_seconds", "tick_seconds", "progress_interval", "plan_timeout",
           "redis_retry_seconds", "chunk_seconds", "scan_interval", "projection_window",
           "critical_within", "warning_within", "alert_repeat")
_INTS = ("webhook_progress_step", "max_attempts", "chunk_bytes", "max_rate", "reserve")
_STRS = ("redis_url", "redis_master_name", "redis_sentinel_password", "prefix", "host",
         "ops_backend", "alert_secret", "public_url")


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``VHDMEND_CONFIG`` (TOML), the environment, overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    tokens: list[TokenEntry] = []
    path = env.get("VHDMEND_CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ClientError(f"cannot read config {path}: {e}") from e
        for key in (*_FLOATS, *_INTS, *_STRS):
            if key in doc:
                values[key] = doc[key]
        if "roots" in doc:
            values["roots"] = _parse_roots(doc["roots"])
        if "webhook_allow_hosts" in doc:
            values["webhook_allow_hosts"] = tuple(doc["webhook_allow_hosts"])
        if "alert_urls" in doc:
            values["alert_urls"] = tuple(doc["alert_urls"])
        tokens.extend(_tokens_from_file(doc.get("tokens", [])))
    for key in _STRS:
        if f"VHDMEND_{key.upper()}" in env:
            values[key] = env[f"VHDMEND_{key.upper()}"]
    for key in _FLOATS:
        if f"VHDMEND_{key.upper()}" in env:
            values[key] = float(env[f"VHDMEND_{key.upper()}"])
    for key in _INTS:
        if f"VHDMEND_{key.upper()}" in env:
            values[key] = int(env[f"VHDMEND_{key.upper()}"])
    if env.get("VHDMEND_ROOTS"):
        values["roots"] = _parse_roots(env["VHDMEND_ROOTS"])
    if "VHDMEND_WEBHOOK_ALLOW_HOSTS" in env:
        values["webhook_allow_hosts"] = tuple(
            h.strip() for h in env["VHDMEND_WEBHOOK_ALLOW_HOSTS"].split(",") if h.strip())
    if "VHDMEND_ALERT_URLS" in env:
        values["alert_urls"] = tuple(
            u.strip() for u in env["VHDMEND_ALERT_URLS"].split(",") if u.strip())
    if env.get("VHDMEND_TOKENS"):
        tokens.extend(_parse_tokens(env["VHDMEND_TOKENS"]))
    if env.get("VHDMEND_API_TOKEN"):
        tokens.append(TokenEntry("local", hash_token(env["VHDMEND_API_TOKEN"]), frozenset(SCOPES)))
    values["tokens"] = tuple(tokens)
    if "roots" in overrides and not isinstance(overrides["roots"], dict):
        overrides["roots"] = _parse_roots(overrides["roots"])
    settings = replace(Settings(), **{**values, **overrides})
    from service import redisconn
    where = redisconn.target(settings)     # a malformed Redis location: ConfigError now
    log.debug("settings loaded: redis %s host %r roots %s", where.describe(), settings.host,
              sorted(settings.roots))
    return settings
