"""A job as stored: the :class:`Job` record, its encoding as a Redis hash, its public view,
and the small typed :class:`Position` it keeps of its operation (the journal on disk is the
checkpoint; the record only says where it is).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ulid import ULID

from service.errors import ClientError
from service.states import TERMINAL

#: Seconds an Idempotency-Key without its job yet counts as a request in flight.
IDEMPOTENCY_IN_FLIGHT = 30.0
#: Events kept per job (oldest dropped first).
MAX_EVENTS = 1000
#: Chunk latency histogram buckets, seconds (Prometheus ``le``).
CHUNK_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Position:
    """Where a job's operation stands: a few scalars, whatever the disk size.

    The operation's full state (plan, identities, per-window digests) is in its on-disk
    journal, written atomically after every chunk; a resumed execution reads it from there.
    """

    journal: str | None = None
    phase: str | None = None
    cursor: int = 0
    #: Bytes done over every phase (the operation's ``done`` summed).
    done: int = 0
    fence: int | None = None

    @classmethod
    def of_state(cls, state: Mapping[str, Any]) -> Position:
        """The position of an operation state (a checkpoint vhdlib reports)."""
        done = state.get("done") or {}
        total = sum(int(v) for v in done.values()) if isinstance(done, Mapping) else int(done)
        fence = state.get("fence")
        return cls(journal=str(state["journal"]) if state.get("journal") else None,
                   phase=state.get("phase"), cursor=int(state.get("cursor") or 0),
                   done=total, fence=None if fence is None else int(fence))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Position:
        """Decode a stored position (fields missing in older records take defaults)."""
        return cls.of_state(d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JSON_FIELDS = frozenset({"options", "progress", "plan", "result", "error", "checkpoint",
                          "callback"})
_INT_FIELDS = frozenset({"attempts", "fence", "chunks"})
_TYPED_FIELDS = {"checkpoint": Position}
_FLOAT_FIELDS = frozenset({"created_at", "updated_at", "started_at", "finished_at"})


@dataclass(frozen=True)
class Job:
    """One job as stored. Build new ones with :func:`new_job`; never mutate, replace."""

    id: str
    type: str
    host: str
    root: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    state: str = "queued"
    phase: str | None = None
    #: ``{done, total, percent, rate, eta_seconds}`` (bytes, bytes/s, seconds).
    progress: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    attempts: int = 0
    #: Checkpoints made over all executions (each after one chunk of I/O).
    chunks: int = 0
    #: ``{type, title, detail}``.
    error: dict[str, Any] | None = None
    external_ref: str | None = None
    requested_by: str | None = None
    #: ``{url, secret}``; the secret is never shown by the API.
    callback: dict[str, Any] | None = None
    #: Why a queued job is not running yet (e.g. waiting for a chain lock).
    reason: str | None = None
    #: Where the operation stands (its journal on disk is the checkpoint).
    checkpoint: Position | None = None
    fence: int | None = None
    worker: str | None = None
    lease_token: str | None = None
    lock_key: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_hash(self) -> dict[str, str]:
        """Redis hash fields (``None`` attributes are left out)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = encode_field(f.name, value)
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Job:
        """Decode a Redis hash (bytes or str keys and values)."""
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            if key in known:
                kw[key] = decode_field(key, v.decode() if isinstance(v, bytes) else v)
        return cls(**kw)

    def to_public(self) -> dict[str, Any]:
        """The JSON view the API and webhooks show: no secret, no lease token."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)
                             if f.name not in ("lease_token", "checkpoint", "callback")}
        d["callback"] = {"url": self.callback["url"]} if self.callback else None
        d["checkpoint"] = self.checkpoint is not None
        for key in _FLOAT_FIELDS:
            d[key] = iso(d[key]) if d[key] else None
        return d


#: Fields of :meth:`Job.to_public`, in its order (``callback`` and ``checkpoint`` last).
_PUBLIC = tuple(f.name for f in fields(Job)
                if f.name not in ("lease_token", "checkpoint", "callback"))


def public_json(raw: Mapping[bytes | str, bytes | str]) -> bytes:
    """``json.dumps(Job.from_hash(raw).to_public())`` without building the Job.

    The status poll is the hottest path of the service (see bench/service): the JSON
    fields are stored as JSON text, so they are spliced in as they are instead of being
    decoded and encoded again; only strings are escaped and timestamps formatted.
    """
    h = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    parts: list[str] = []
    for name in _PUBLIC:
        v = h.get(name)
        if v is None:
            value = "0" if name in _INT_FIELDS and name != "fence" else "null"
        else:
            text = v.decode() if isinstance(v, bytes) else v
            if name in _JSON_FIELDS:
                value = text
            elif name in _INT_FIELDS:
                value = str(int(text))
            elif name in _FLOAT_FIELDS:
                value = f'"{iso(float(text))}"' if float(text) else "null"
            else:
                value = json.dumps(text)
        parts.append(f'"{name}":{value}')
    cb = h.get("callback")
    url = json.loads(cb).get("url") if cb else None
    parts.append('"callback":' + ("null" if not cb else json.dumps({"url": url})))
    parts.append('"checkpoint":' + ("true" if h.get("checkpoint") is not None else "false"))
    return ("{" + ",".join(parts) + "}").encode()


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(ts * 1000) % 1000:03d}Z"


def encode_field(name: str, value: Any) -> str:
    if isinstance(value, Position):
        value = value.to_dict()
    if name in _JSON_FIELDS:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if name in _FLOAT_FIELDS:
        return repr(float(value))
    return str(value)


def decode_field(name: str, raw: str) -> Any:
    if name in _TYPED_FIELDS:
        return _TYPED_FIELDS[name].from_dict(json.loads(raw))
    if name in _JSON_FIELDS:
        return json.loads(raw)
    if name in _INT_FIELDS:
        return int(raw)
    if name in _FLOAT_FIELDS:
        return float(raw)
    return raw


def new_job(type: str, host: str, root: str, path: str, *,
            options: Mapping[str, Any] | None = None, external_ref: str | None = None,
            requested_by: str | None = None, callback: Mapping[str, Any] | None = None,
            now: float | None = None) -> Job:
    """A fresh queued job with a new ULID."""
    now = time.time() if now is None else now
    return Job(id=str(ULID()), type=type, host=host, root=root, path=path,
               options=dict(options or {}), external_ref=external_ref,
               requested_by=requested_by, callback=dict(callback) if callback else None,
               created_at=now, updated_at=now)


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        ULID.from_str(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as e:
        raise ClientError("page_token is not valid") from e
    return raw


def text(x: bytes | str) -> str:
    """A Redis reply as ``str``."""
    return x.decode() if isinstance(x, bytes) else x


def without(job: Job, name: str) -> Job:
    """``job`` with attribute ``name`` cleared (a deleted hash field)."""
    from dataclasses import replace
    if name not in {f.name for f in fields(job)}:
        return job
    blank: dict[str, Any] = {name: None}
    return replace(job, **blank)
