"""Foresight on the real stack: a real redis-server, a real Celery worker whose watcher scans
a real tmpfs volume, a real HTTP receiver verifying each alert with ``standardwebhooks``.

Over-committed -> a ``warning`` alert; below the reserve -> ``critical``; fixed ->
``resolved``; each exactly once, Alertmanager-shaped, with the first plan step as a job.
An on-demand ``scan`` job over POST /v1/jobs runs while the pool is busy.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from service.store import RedisJobStore
from tests import tmpfs
from tests.chains import create
from tests.receiver import Receiver
from tests.workers.conftest import http, wait_for
from vhdlib.layer import DiskType

MiB = 1 << 20
SECRET = "whsec_" + base64.b64encode(b"foresight-alert-secret-0123456789").decode()
volume = tmpfs.volume

pytestmark = pytest.mark.slow


def risk_alerts(rx: Receiver) -> list[tuple[str, str]]:
    return [(b["status"], b["alerts"][0]["labels"]["severity"]) for b in rx.received]


def test_alerts_follow_the_risk(stack, volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("v", 128)
    root = vol / "vms"
    root.mkdir()
    create("vhd", root / "fixed.vhd", 8 * MiB, DiskType.FIXED).close()
    with Receiver(SECRET) as rx:
        stack.worker("h1", VHDMEND_ROOTS=f"vms={root}", VHDMEND_SCAN_INTERVAL="1",
                     VHDMEND_RESERVE=str(16 * MiB), VHDMEND_ALERT_URLS=rx.url,
                     VHDMEND_ALERT_SECRET=SECRET, VHDMEND_PUBLIC_URL="https://vhdmend.example")
        stack.ready("h1")
        store = RedisJobStore(stack.server.client(), prefix=stack.prefix)
        wait_for(lambda: store.volumes.statuses(), 30, what="a first scan")
        (st,) = store.volumes.statuses()
        assert st["risk"] == "ok" and st["roots"] == ["vms"]

        create("vhd", root / "dyn.vhd", 112 * MiB, DiskType.DYNAMIC).close()
        wait_for(lambda: rx.received, 30, what="the warning alert")
        body = rx.received[0]
        assert body["version"] == "4" and body["status"] == "firing"
        assert body["receiver"] and body["groupKey"] and body["commonLabels"]
        (alert,) = body["alerts"]
        assert alert["labels"] == {"alertname": "VhdmendVolumeRisk", "severity": "warning",
                                   "host": "h1", "root": "vms", "volume": st["id"]}
        assert alert["generatorURL"] == f"https://vhdmend.example/v1/volumes/{st['id']}"
        assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["startsAt"]
        assert "over-committed" in alert["annotations"]["description"]
        assert "first step: remediate vms:dyn.vhd" in alert["annotations"]["description"]
        assert '"path": "dyn.vhd"' in alert["annotations"]["first_step_job"]
        assert str(vol) not in str(body)
        fingerprint = alert["fingerprint"]

        tmpfs.fill(root / "hog", 8 * MiB)
        wait_for(lambda: len(rx.received) >= 2, 30, what="the critical alert")
        assert risk_alerts(rx)[1] == ("firing", "critical")
        assert "below the reserve" in rx.received[1]["alerts"][0]["annotations"]["description"]

        (root / "hog").unlink()
        (root / "dyn.vhd").unlink()
        wait_for(lambda: len(rx.received) >= 3, 30, what="the resolved alert")
        last = rx.received[2]["alerts"][0]
        assert risk_alerts(rx)[2] == ("resolved", "critical")
        assert last["endsAt"] != "0001-01-01T00:00:00Z"
        assert {b["alerts"][0]["fingerprint"] for b in rx.received} == {fingerprint}
        # One notification per change, however many scans run since (one a second).
        seen = store.volumes.status(st["id"])["scanned_at_unix"]
        wait_for(lambda: store.volumes.status(st["id"])["scanned_at_unix"] > seen + 2, 30,
                 what="three more scans")
        assert len(rx.received) == 3 and rx.rejected == 0 and len(set(rx.ids)) == 3


def test_scan_job_runs_beside_a_busy_pool(stack, volume) -> None:  # type: ignore[no-untyped-def]
    from tests.workers.conftest import make_chain
    vol: Path = volume("w", 160)
    root = vol / "vms"
    root.mkdir()
    chain = make_chain(root / "busy")
    create("vhd", root / "dyn.vhd", 256 * MiB, DiskType.DYNAMIC).close()
    stack.worker("h1", VHDMEND_ROOTS=f"vms={root}", VHDMEND_SCAN_INTERVAL="0",
                 VHDMEND_RESERVE=str(16 * MiB),
                 VHDMEND_MAX_RATE=str(1 << 20))
    stack.ready("h1")
    url = stack.api()
    # A slow merge occupies the pool (1 MiB/s over a 32 MiB chain).
    code, busy, _ = http("POST", f"{url}/v1/jobs", {
        "type": "merge", "host": "h1", "root": "vms", "path": f"busy/{chain[-1].name}"})
    assert code in (201, 202), busy
    wait_for(lambda: http("GET", f"{url}/v1/jobs/{busy['id']}")[1]["state"] == "running",
             30, what="the merge to run")
    # VHDMEND_SCAN_INTERVAL=0: no scheduled scan has stored anything.
    assert http("GET", f"{url}/v1/volumes")[1]["items"] == []
    code, job, _ = http("POST", f"{url}/v1/jobs", {
        "type": "scan", "host": "h1", "root": "vms", "path": "."})
    assert code in (201, 202), job
    done = wait_for(lambda: (j := http("GET", f"{url}/v1/jobs/{job['id']}")[1])["state"]
                    in ("succeeded", "failed") and j, 30, what="the scan job")
    assert done["state"] == "succeeded", done
    assert http("GET", f"{url}/v1/jobs/{busy['id']}")[1]["state"] == "running"
    (v,) = done["result"]["volumes"]
    assert v["risk"] == "warning" and v["roots"] == ["vms"]
    (listed,) = http("GET", f"{url}/v1/volumes")[1]["items"]
    assert listed["id"] == v["id"] and listed["free_bytes"] == v["free_bytes"]
    http("POST", f"{url}/v1/jobs/{busy['id']}/cancel")
