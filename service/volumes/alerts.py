"""Risk alerts in the shape of Prometheus Alertmanager's webhook (version 4).

On every change of a volume's risk (ok -> warning -> critical, and back) one notification
goes to each ``alert_urls`` receiver, through the job webhooks' outbox (signed as Standard
Webhooks with ``alert_secret``, retried with backoff, allow-list enforced: see
:mod:`workers.webhooks`). While a volume stays at risk, the alert is repeated every
``alert_repeat`` hours; nothing else is sent. Any receiver written for Alertmanager takes
the body unchanged; ``fingerprint`` is stable per volume (a ticket bridge dedupes on it,
and may submit the first plan step's ``job`` with ``external_ref`` = the fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from ulid import ULID

from service.volumes.projection import duration

log = logging.getLogger(__name__)

ALERTNAME = "VhdmendVolumeRisk"
#: Alertmanager's "not ended yet".
NOT_ENDED = "0001-01-01T00:00:00Z"


def fingerprint(volume_id: str) -> str:
    """Stable per volume (Alertmanager's fingerprints are 16 hex digits)."""
    return hashlib.sha256(f"{ALERTNAME}\0{volume_id}".encode()).hexdigest()[:16]


def _human(n: int | float) -> str:
    from vhdlib.scan.volumes import _human as h
    return h(int(n))


def _iso(t: float) -> str:
    from service.volumes.monitor import iso
    return iso(t)


def description(status: dict[str, Any]) -> str:
    """The figures, the reasons and the first plan step, in words."""
    parts = [f"free {_human(status['free_bytes'])} of {_human(status['total_bytes'])} "
             f"(reserve {_human(status['reserve_bytes'])}); the disks can grow by "
             f"{_human(status['growth_bytes'])}"]
    stf = status.get("seconds_to_full")
    reasons = list(status.get("reasons") or [])
    if stf is not None and not any("reaches the reserve" in r for r in reasons):
        parts.append(f"projected to reach the reserve in {duration(stf)}")
    parts.extend(reasons)
    plan = status.get("plan") or {}
    steps = plan.get("steps") or []
    if steps:
        first = steps[0]
        parts.append(f"first step: {first['description']} (needs "
                     f"{_human(first['needs_bytes'])}; submit as a job: "
                     f"{json.dumps(first['job'], sort_keys=True)})")
    elif status["risk"] != "ok" and plan.get("infeasible"):
        parts.append(f"no feasible step: {plan['infeasible'][0]['why']}")
    return ". ".join(parts)


def payload(status: dict[str, Any], *, state: str, severity: str, starts_at: float,
            ends_at: float | None, public_url: str) -> dict[str, Any]:
    """The Alertmanager webhook body for one volume."""
    vid = status["id"]
    roots = status.get("roots") or []
    labels = {"alertname": ALERTNAME, "severity": severity, "host": status["host"],
              "root": ",".join(roots), "volume": vid}
    where = f"{status['host']}:{','.join(roots) or vid}"
    summary = (f"volume {where} is {status['risk']}" if state == "firing"
               else f"volume {where} is ok again")
    annotations = {"summary": summary, "description": description(status)}
    steps = (status.get("plan") or {}).get("steps") or []
    if steps and steps[0].get("job"):
        annotations["first_step_job"] = json.dumps(steps[0]["job"], sort_keys=True)
    base = public_url.rstrip("/")
    alert = {"status": state, "labels": labels, "annotations": annotations,
             "startsAt": _iso(starts_at),
             "endsAt": NOT_ENDED if ends_at is None else _iso(ends_at),
             "generatorURL": f"{base}/v1/volumes/{vid}", "fingerprint": fingerprint(vid)}
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{ALERTNAME}", volume="{vid}"}}',
            "truncatedAlerts": 0, "status": state, "receiver": "vhdmend",
            "groupLabels": {"alertname": ALERTNAME, "volume": vid},
            "commonLabels": labels, "commonAnnotations": annotations,
            "externalURL": base, "alerts": [alert]}


def decide(previous: dict[str, Any] | None, status: dict[str, Any], now: float,
           repeat_seconds: float) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """What to send for ``status`` given the alert state carried from ``previous``:
    ``(kwargs of payload() or None, new alert state)``."""
    state = dict((previous or {}).get("alert") or {})
    notified = state.get("risk", "ok")
    risk = status["risk"]
    if risk != notified:
        if risk == "ok":
            send = {"state": "resolved", "severity": notified,
                    "starts_at": state.get("started_at", now), "ends_at": now}
            return send, {"risk": "ok", "sent_at": now}
        started = state.get("started_at", now) if notified != "ok" else now
        send = {"state": "firing", "severity": risk, "starts_at": started, "ends_at": None}
        return send, {"risk": risk, "sent_at": now, "started_at": started}
    if risk != "ok" and now - float(state.get("sent_at", 0)) >= repeat_seconds:
        send = {"state": "firing", "severity": risk,
                "starts_at": state.get("started_at", now), "ends_at": None}
        return send, {**state, "sent_at": now}
    return None, state


class Notifier:
    """Queues the alerts a new status calls for (``monitor.observe``'s ``on_status``)."""

    def __init__(self, store: Any, settings: Any, *, clock: Any = time.time) -> None:
        self.store = store
        self.s = settings
        self.clock = clock

    def on_status(self, previous: dict[str, Any] | None, status: dict[str, Any]) -> None:
        now = float(status.get("scanned_at_unix") or self.clock())
        send, state = decide(previous, status, now, self.s.alert_repeat * 3600)
        status["alert"] = state
        if send is None or not self.s.alert_urls:
            return
        body = payload(status, public_url=self.s.public_url, **send)
        for url in self.s.alert_urls:
            delivery_id = f"msg_{ULID()}"
            record = {"id": delivery_id, "alert": status["id"], "url": url, "payload": body,
                      "attempt": 0, "first_at": self.clock()}
            self.store.queue_delivery(delivery_id, json.dumps(record, separators=(",", ":")),
                                      self.clock())
        log.info("volume %s: %s alert (%s) queued for %d receivers", status["id"],
                 send["state"], send["severity"], len(self.s.alert_urls))
