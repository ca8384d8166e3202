"""Signed webhooks for ticketing systems (Standard Webhooks).

Every delivery carries ``webhook-id`` (stable across retries, for the receiver's dedupe),
``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``. A secret ``whsec_<base64>`` is used base64-decoded, as the
specification says; any other secret is used as its UTF-8 bytes.

Deliveries are queued atomically with the state change that caused them (see
:meth:`service.store.JobStore.transition`) and sent by the workers' housekeeping loop:
retried with exponential backoff and full jitter for up to ``webhook_max_age`` (24 h), each
attempt recorded on the job. Outbound hosts must be on the allow-list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from service.callbacks import allowed, secret_bytes
from service.config import Settings
from service.errors import NotFound
from service.store import JobStore

log = logging.getLogger(__name__)

#: Longest wait between two attempts.
MAX_DELAY = 3600.0


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.ts.body``."""
    mac = hmac.new(secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body,
                   hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """Check a delivery as a receiver would (used by tests and the docs)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts = int(lower["webhook-timestamp"])
    if abs(time.time() - ts) > tolerance:
        return False
    expected = sign(secret, lower["webhook-id"], ts, body)
    return any(hmac.compare_digest(expected, s) for s in lower["webhook-signature"].split())


def backoff(attempt: int, base: float) -> float:
    """Exponential backoff with jitter: uniform in [base/2, min(cap, base * 2**attempt)].

    The floor of half the base keeps a failing receiver from being retried at once (full
    jitter's [0, ...] could draw ~0 s); the spread still de-synchronises the workers.
    """
    return random.uniform(base / 2, min(MAX_DELAY, base * 2 ** attempt))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the allow-list: treat it as a failed attempt."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def deliver_due(store: JobStore, settings: Settings, *, now: float | None = None,
                limit: int = 20) -> int:
    """Send deliveries whose time has come; returns how many were attempted."""
    now = time.time() if now is None else now
    n = 0
    for delivery_id in store.due_deliveries(now, limit):
        # Only the worker that takes it sends this attempt.
        if not store.take_delivery(delivery_id):
            continue
        n += 1
        _attempt(store, settings, delivery_id, now)
    return n


def _attempt(store: JobStore, settings: Settings, delivery_id: str, now: float) -> None:
    record = store.delivery(delivery_id)
    if record is None:
        return
    if record.get("alert"):
        _attempt_alert(store, settings, record, now)
        return
    job_id = record["job_id"]
    try:
        job = store.get(job_id)
    except NotFound:
        store.drop_delivery(delivery_id)
        return
    if not job.callback:
        store.drop_delivery(delivery_id)
        return
    url, secret = str(job.callback["url"]), str(job.callback.get("secret") or "")
    attempt = int(record["attempt"]) + 1
    event: dict[str, Any] = {"type": "webhook", "delivery": delivery_id,
                             "event": record["payload"]["type"], "attempt": attempt, "url": url}
    if not allowed(url, settings.webhook_allow_hosts):
        log.warning("job %s: webhook host of %s not allowed; dropped", job_id, url)
        store.add_event(job_id, {**event, "ok": False, "error": "host not on the allow-list"})
        store.count("webhook_failures")
        store.drop_delivery(delivery_id)
        return
    body = json.dumps(record["payload"], separators=(",", ":"), sort_keys=True).encode()
    ts = int(time.time())
    headers = {"content-type": "application/json", "user-agent": "vhdmend-webhooks/1",
               "webhook-id": delivery_id, "webhook-timestamp": str(ts),
               "webhook-signature": sign(secret, delivery_id, ts, body)}
    status: int | None = None
    error = None
    try:
        status = _post(url, body, headers, settings.webhook_timeout)
    except (OSError, ValueError) as e:
        error = str(e)
    ok = status is not None and 200 <= status < 300
    store.add_event(job_id, {**event, "ok": ok, "status": status, "error": error})
    if ok:
        store.count("webhook_deliveries")
        store.drop_delivery(delivery_id)
        log.info("job %s: webhook %s delivered (attempt %d)", job_id, delivery_id, attempt)
        return
    store.count("webhook_failures")
    delay = backoff(attempt, settings.webhook_backoff_base)
    if now + delay - float(record["first_at"]) > settings.webhook_max_age:
        log.warning("job %s: webhook %s gave up after %d attempts", job_id, delivery_id, attempt)
        store.add_event(job_id, {"type": "webhook_gave_up", "delivery": delivery_id,
                                 "attempts": attempt})
        store.drop_delivery(delivery_id)
        return
    record["attempt"] = attempt
    store.retry_delivery(record, now + delay)
    log.info("job %s: webhook %s failed (%s); retry in %.0fs", job_id, delivery_id,
             status or error, delay)


def _send(url: str, secret: str, delivery_id: str, payload: Any,
          settings: Settings) -> tuple[int | None, str | None]:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    ts = int(time.time())
    headers = {"content-type": "application/json", "user-agent": "vhdmend-webhooks/1",
               "webhook-id": delivery_id, "webhook-timestamp": str(ts),
               "webhook-signature": sign(secret, delivery_id, ts, body)}
    try:
        return _post(url, body, headers, settings.webhook_timeout), None
    except (OSError, ValueError) as e:
        return None, str(e)


def _attempt_alert(store: JobStore, settings: Settings, record: dict[str, Any],
                   now: float) -> None:
    """A volume alert (:mod:`service.volumes.alerts`): same signing, backoff, allow-list;
    the outcome goes to the log and the counters (there is no job to record it on)."""
    delivery_id, url = str(record["id"]), str(record["url"])
    if not allowed(url, settings.webhook_allow_hosts):
        log.warning("alert %s: host of %s not on the allow-list; dropped", delivery_id, url)
        store.count("alert_failures")
        store.drop_delivery(delivery_id)
        return
    attempt = int(record["attempt"]) + 1
    status, error = _send(url, settings.alert_secret, delivery_id, record["payload"], settings)
    if status is not None and 200 <= status < 300:
        store.count("alert_deliveries")
        store.drop_delivery(delivery_id)
        log.info("alert %s for volume %s delivered to %s", delivery_id, record["alert"], url)
        return
    store.count("alert_failures")
    delay = backoff(attempt, settings.webhook_backoff_base)
    if now + delay - float(record["first_at"]) > settings.webhook_max_age:
        log.warning("alert %s gave up after %d attempts", delivery_id, attempt)
        store.drop_delivery(delivery_id)
        return
    store.retry_delivery({**record, "attempt": attempt}, now + delay)
    log.info("alert %s failed (%s); retry in %.0fs", delivery_id, status or error, delay)
