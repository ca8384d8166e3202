"""Alert decisions (one per change, repeats while firing) and their delivery through the
webhook outbox to a real HTTP receiver verifying with ``standardwebhooks``."""

from __future__ import annotations

import base64
import time

from service import config
from service.store import StubJobStore
from service.volumes import alerts
from tests.receiver import Receiver
from workers import webhooks

SECRET = "whsec_" + base64.b64encode(b"alert-unit-secret-0123456789abcd").decode()


def status(risk: str, t: float, vid: str = "v1") -> dict:  # type: ignore[type-arg]
    return {"id": vid, "host": "h1", "roots": ["vms"], "risk": risk, "reasons": [f"{risk}!"],
            "free_bytes": 1 << 30, "total_bytes": 8 << 30, "reserve_bytes": 2 << 30,
            "growth_bytes": 4 << 30, "rate_bytes_per_second": -1000.0,
            "seconds_to_full": 7200.0, "scanned_at_unix": t,
            "plan": {"steps": [{"description": "remediate vms:a.vhd into one fixed disk",
                                "needs_bytes": 1 << 20,
                                "job": {"type": "remediate", "host": "h1", "root": "vms",
                                        "path": "a.vhd", "options": {"type": "fixed"}}}],
                     "infeasible": []}}


def test_one_per_change_and_repeats() -> None:
    prev = None
    sent = []
    for t, risk in [(0, "ok"), (300, "warning"), (600, "warning"), (900, "critical"),
                    (1200, "critical"), (1200 + 4 * 3600, "critical"), (20000, "ok"),
                    (20300, "ok")]:
        st = status(risk, t)
        send, st["alert"] = alerts.decide(prev, st, t, 4 * 3600)
        if send:
            sent.append((t, send["state"], send["severity"], send["starts_at"]))
        prev = st
    assert sent == [(300, "firing", "warning", 300), (900, "firing", "critical", 300),
                    (1200 + 4 * 3600, "firing", "critical", 300),
                    (20000, "resolved", "critical", 300)]


def test_payload_shape() -> None:
    body = alerts.payload(status("critical", 100.0), state="firing", severity="critical",
                          starts_at=50.0, ends_at=None, public_url="https://x.example/")
    (a,) = body["alerts"]
    assert body["version"] == "4" and body["commonLabels"] == a["labels"]
    assert a["fingerprint"] == alerts.fingerprint("v1") and len(a["fingerprint"]) == 16
    assert a["generatorURL"] == "https://x.example/v1/volumes/v1"
    assert a["startsAt"] == "1970-01-01T00:00:50Z" and a["endsAt"] == alerts.NOT_ENDED
    d = a["annotations"]["description"]
    assert "projected to reach the reserve in 2 h" in d and "first step: remediate vms:a.vhd" in d


def test_delivery_signed_retried_and_allow_listed() -> None:
    store = StubJobStore()
    with Receiver(SECRET, fail=1) as rx:
        s = config.load({}, alert_urls=(rx.url, "http://blocked.example/x"),
                        alert_secret=SECRET, webhook_allow_hosts=("127.0.0.1",),
                        webhook_backoff_base=0.01)
        alerts.Notifier(store, s).on_status(None, status("warning", time.time()))
        assert webhooks.deliver_due(store, s) == 2      # 503, and the blocked host dropped
        assert rx.received == []
        deadline = time.time() + 5
        while not rx.received and time.time() < deadline:
            webhooks.deliver_due(store, s, now=time.time() + 1)
        assert len(rx.received) == 1 and rx.rejected == 0
        assert rx.received[0]["alerts"][0]["labels"]["severity"] == "warning"
    counters, _ = store.metrics()
    assert counters["alert_deliveries"] == 1 and counters["alert_failures"] == 2
