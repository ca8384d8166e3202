"""hosts, plan, health and metrics."""

from __future__ import annotations

import threading
import time

from service import hosts as registry
from tests.api.conftest import auth


def test_hosts_lists_workers_roots_space_and_running_jobs(client, store, tmp_path):
    registry.register(store, "h1", "w1", {"vms": str(tmp_path)}, ttl=60, queue="q1")
    registry.register(store, "h1", "w2", {"vms": str(tmp_path)}, ttl=60, queue="q1")
    registry.register(store, "h2", "w3", {"b": str(tmp_path)}, ttl=60, queue="q2")
    job = client.post("/v1/jobs", json={"type": "compact", "host": "h1", "root": "vms",
                                        "path": "d.vhd"}, headers=auth()).json
    store.transition(job["id"], ["queued"], "running")
    items = client.get("/v1/hosts", headers=auth("reader")).json["items"]
    assert [h["host"] for h in items] == ["h1", "h2"]
    h1 = items[0]
    assert len(h1["workers"]) == 2 and h1["running_jobs"] == [job["id"]]
    assert h1["roots"]["vms"]["free_bytes"] > 0
    assert h1["last_heartbeat"].endswith("Z")


def test_a_host_whose_workers_stopped_heartbeating_is_stale_with_the_time_since(
        client, store, tmp_path):
    # Given h1's worker beating (a 60 s window) and h2's whose heartbeat stopped (0.2 s)
    registry.register(store, "h1", "w1", {"vms": str(tmp_path)}, ttl=60, queue="q1")
    registry.register(store, "h2", "w2", {"b": str(tmp_path)}, ttl=0.2, queue="q2")
    time.sleep(0.5)
    # Then /v1/hosts still lists h2, as stale, with the seconds since its last heartbeat
    items = {h["host"]: h for h in client.get("/v1/hosts", headers=auth("reader")).json["items"]}
    assert items["h1"]["state"] == "live" and items["h1"]["seconds_since_heartbeat"] < 60
    h2 = items["h2"]
    assert h2["state"] == "stale" and 0.5 <= h2["seconds_since_heartbeat"] < 30
    assert [w["state"] for w in h2["workers"]] == ["stale"]
    assert h2["workers"][0]["seconds_since_heartbeat"] >= 0.5
    assert h2["roots"]["b"]["total_bytes"] > 0
    # And it has no live worker for the API's purposes (a plan is refused at once)
    assert [w["host"] for w in registry.workers(store)] == ["h1"]
    # A new heartbeat makes it live again; a clean stop removes it
    registry.register(store, "h2", "w2", {"b": str(tmp_path)}, ttl=60, queue="q2")
    items = {h["host"]: h for h in client.get("/v1/hosts", headers=auth("reader")).json["items"]}
    assert items["h2"]["state"] == "live"
    registry.unregister(store, "h2", "w2")
    assert [h["host"] for h in client.get("/v1/hosts", headers=auth()).json["items"]] == ["h1"]


def test_a_restarted_worker_hides_its_dead_predecessor(client, store, tmp_path):
    registry.register(store, "h1", "w_dead", {"vms": str(tmp_path)}, ttl=0.1, queue="q1")
    time.sleep(0.3)
    registry.register(store, "h1", "w_new", {"vms": str(tmp_path)}, ttl=60, queue="q1")
    (h1,) = client.get("/v1/hosts", headers=auth("reader")).json["items"]
    assert h1["state"] == "live" and [w["worker"] for w in h1["workers"]] == ["w_new"]


def test_stale_is_decided_by_the_window_each_worker_registered_with(store, tmp_path):
    registry.register(store, "h1", "w1", {"vms": str(tmp_path)}, ttl=11, queue="q1")
    beat = registry.all_workers(store)[0]["heartbeat"]
    assert not registry.all_workers(store, now=beat + 10.9)[0]["stale"]
    late = registry.all_workers(store, now=beat + 11.1)[0]
    assert late["stale"] and abs(late["age"] - 11.1) < 1e-6
    assert registry.workers(store, now=beat + 11.1) == []


def _answer_plans(store, state="succeeded"):
    def run(job_id, host):
        def later():
            time.sleep(0.05)
            store.transition(job_id, None, state, set_fields={
                "plan": {"operation": "compact", "steps": []} if state == "succeeded" else None,
                "error": {"type": "not_a_disk", "title": "NotADiskError",
                          "detail": "no such file"} if state == "failed" else None})
        threading.Thread(target=later).start()
    return run


def _live_worker(store, tmp_path):
    # /v1/plan answers 503 at once when the host has no live worker (issue 8 D10)
    registry.register(store, "h1", "w1", {"vms": str(tmp_path)}, ttl=60, queue="q1")


def test_plan_waits_for_the_worker(app, client, store, tmp_path):
    _live_worker(store, tmp_path)
    app.extensions["vhdmend_dispatch"] = _answer_plans(store)
    # jobs:write: a plan makes the worker read disks (issue 8 D10)
    resp = client.post("/v1/plan", json={"host": "h1", "root": "vms", "path": "d.vhd",
                                         "operation": "compact"}, headers=auth("writer"))
    assert resp.status_code == 200
    assert resp.json["plan"]["operation"] == "compact" and resp.json["job_id"]


def test_plan_failure_is_a_problem(app, client, store, tmp_path):
    _live_worker(store, tmp_path)
    app.extensions["vhdmend_dispatch"] = _answer_plans(store, "failed")
    resp = client.post("/v1/plan", json={"host": "h1", "root": "vms", "path": "d.vhd",
                                         "operation": "compact"}, headers=auth())
    assert resp.status_code == 422 and resp.json["type"].endswith("/not_a_disk")


def test_plan_timeout_is_202_with_location(client, store, tmp_path):
    _live_worker(store, tmp_path)
    resp = client.post("/v1/plan", json={"host": "h1", "root": "vms", "path": "d.vhd",
                                         "operation": "convert",
                                         "options": {"output": "o.vhd"}}, headers=auth())
    assert resp.status_code == 202 and resp.headers["Location"].startswith("/v1/jobs/")


def test_plan_rejects_bad_options(client):
    resp = client.post("/v1/plan", json={"host": "h1", "root": "vms", "path": "d.vhd",
                                         "operation": "convert", "options": {}}, headers=auth())
    assert resp.status_code == 422


def test_health_and_readiness(client, store, monkeypatch):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 200

    def down():
        raise ConnectionError("refused")
    monkeypatch.setattr(store.r, "ping", down)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.content_type == "application/problem+json"


def test_metrics_in_prometheus_text(client, store):
    client.post("/v1/jobs", json={"type": "compact", "host": "h1", "root": "r",
                                  "path": "d.vhd"}, headers=auth())
    store.observe_chunk(0.7, 1000)
    store.count("webhook_failures")
    text = client.get("/metrics", headers=auth("reader")).get_data(as_text=True)
    assert 'vhdmend_jobs{state="queued"} 1' in text
    assert "vhdmend_bytes_processed_total 1000" in text
    assert 'vhdmend_chunk_seconds_bucket{le="1.0"} 1' in text
    assert 'vhdmend_chunk_seconds_bucket{le="0.5"} 0' in text
    assert "vhdmend_webhook_failures_total 1" in text
