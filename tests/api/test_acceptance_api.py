"""Acceptance checks of issue 4 that the resource tests left open or only touched lightly:
the job record's fields, RFC 9457 on every error path, the SSE query, cancel of a requeued
job, the claim race, retention, webhook delivery rules, rate/ETA, the CLI's clear message
when redis-server is missing."""

from __future__ import annotations

import json
import re
import time

import pytest
from ulid import ULID

from service.config import load
from service.job import new_job
from service.states import STATES
from tests.api.conftest import auth, job_body
from workers import webhooks

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def submit(client, **over):
    resp = client.post("/v1/jobs", json=job_body(**over), headers=auth())
    assert resp.status_code == 202, resp.json
    return resp.json


# --- the job record -------------------------------------------------------------------


def test_job_has_every_field_the_issue_names(client):
    job = submit(client, external_ref="INC-9",
                 callback={"url": "http://127.0.0.1:9/h", "secret": "0123456789abcdef"})
    # id is a real ULID whose time is now
    assert abs(ULID.from_str(job["id"]).timestamp - time.time()) < 60
    for name in ("id", "type", "options", "state", "phase", "progress", "plan", "attempts",
                 "error", "external_ref", "requested_by", "callback", "created_at",
                 "updated_at", "started_at", "finished_at", "host", "root", "path"):
        assert name in job, name
    assert job["options"] == {"output": "vm1/flat.vhdx", "type": "fixed"}
    assert job["attempts"] == 0 and job["error"] is None and job["requested_by"] == "writer"
    assert RFC3339.match(job["created_at"]) and RFC3339.match(job["updated_at"])
    assert job["started_at"] is None and job["finished_at"] is None


def test_every_state_of_the_issue_exists():
    assert set(STATES) == {"queued", "running", "pausing", "paused", "cancelling",
                           "succeeded", "failed", "cancelled"}


def test_poll_shows_progress_error_and_finish_time(client, store):
    job = submit(client)
    store.transition(job["id"], ["queued"], "running", set_fields={
        "progress": {"done": 5, "total": 10, "percent": 50.0, "rate": 2.0,
                     "eta_seconds": 2.5}})
    store.transition(job["id"], ["running"], "failed", set_fields={
        "error": {"type": "corrupt_image", "title": "CorruptImageError", "detail": "bad"}})
    got = client.get(f"/v1/jobs/{job['id']}", headers=auth("reader")).json
    assert got["progress"]["rate"] == 2.0 and got["progress"]["eta_seconds"] == 2.5
    assert got["error"] == {"type": "corrupt_image", "title": "CorruptImageError",
                            "detail": "bad"}
    assert RFC3339.match(got["finished_at"])


# --- problem+json everywhere -----------------------------------------------------------


@pytest.mark.parametrize("method,path,kw,status", [
    ("put", "/v1/jobs", {}, 405),
    ("get", "/v1/jobs/01J0000000000000000000000A/nothing", {}, 404),
    ("post", "/v1/jobs", {"data": b"x" * (2 << 20), "content_type": "application/json"}, 413),
    ("get", "/v1/jobs/01J0000000000000000000000A/events?start=-1", {}, 422),
    ("get", "/v1/jobs/01J0000000000000000000000A/events?colour=red", {}, 422),
    ("post", "/v1/plan", {"json": {"host": "h1"}}, 422),
    ("post", "/v1/plan", {"json": {"host": "h1", "root": "r", "path": "d.vhd",
                                   "operation": "merge", "surprise": 1}}, 422),
])
def test_error_paths_are_problem_json(client, method, path, kw, status):
    resp = getattr(client, method)(path, headers=auth(), **kw)
    assert resp.status_code == status
    assert resp.content_type == "application/problem+json"
    body = resp.json
    # The type is an absolute URI of this service (issue 8 D4: it must resolve here).
    assert body["status"] == status and body["type"].startswith("http://localhost/problems/")
    assert body["title"]


# --- SSE ------------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["interval=abc", "interval=", "colour=red"])
def test_stream_rejects_a_bad_query_with_422_not_500(client, store, q):
    job = submit(client)
    store.transition(job["id"], ["queued"], "cancelled")
    resp = client.get(f"/v1/jobs/{job['id']}/stream?{q}", headers=auth())
    assert resp.status_code == 422, resp.get_data(as_text=True)[:200]
    assert resp.content_type == "application/problem+json"


def test_stream_accepts_a_valid_interval(client, store):
    job = submit(client)
    store.transition(job["id"], ["queued"], "succeeded")
    resp = client.get(f"/v1/jobs/{job['id']}/stream?interval=0.1", headers=auth())
    assert resp.status_code == 200 and '"state": "succeeded"' in resp.get_data(as_text=True)


# --- cancel of a job that has partial output --------------------------------------------


def test_cancel_of_a_requeued_job_with_a_checkpoint_lets_the_worker_clean_up(client, store,
                                                                             sent):
    # Given a job whose first execution died mid-way: the reaper requeued it, and its
    # journal (partial output) is on disk
    job = submit(client)
    store.transition(job["id"], ["queued"], "running")
    store.transition(job["id"], ["running"], "queued", set_fields={
        "checkpoint": {"journal": "/r/vm1/flat.vhdx.vhdmend.json", "phase": "copy"},
        "reason": "previous execution stopped heartbeating; requeued"})
    # When it is cancelled before a worker picks it up again
    resp = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth())
    # Then it goes through cancelling (a worker resumes the journal and rolls it back), as a
    # paused job with a checkpoint does, instead of ending at once with the journal left
    assert resp.status_code == 202
    assert resp.json["state"] == "cancelling"
    assert sent.calls[-1] == (job["id"], "h1")


def test_cancel_of_a_fresh_queued_job_is_immediate(client):
    job = submit(client)
    resp = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth())
    assert resp.json["state"] == "cancelled" and RFC3339.match(resp.json["finished_at"])


# --- the claim race -------------------------------------------------------------------


@pytest.mark.parametrize("action,expected", [("cancel", "cancelled"), ("pause", "paused")])
def test_a_claim_racing_a_cancel_or_pause_does_not_revive_the_job(client, store, monkeypatch,
                                                                  action, expected):
    # Given a queued job, and a worker whose claim takes the lease just before the API
    # cancels (or pauses) the job
    job = submit(client)
    real = store.transition
    raced = []

    def racing(job_id, allowed, new_state, **kw):
        if not raced:
            raced.append(1)
            assert client.post(f"/v1/jobs/{job_id}/{action}",
                               headers=auth()).json["state"] == expected
        return real(job_id, allowed, new_state, **kw)
    monkeypatch.setattr(store, "transition", racing)
    # When the claim goes on
    outcome, _ = store.claim(job["id"], "tok", 30, "w1", 5)
    monkeypatch.setattr(store, "transition", real)
    # Then nothing runs: the job stays as the API left it, and no lease is left behind
    assert outcome == "skip"
    assert store.get(job["id"]).state == expected
    assert not store.lease_alive(job["id"])


# --- retention ------------------------------------------------------------------------


def test_retention_purges_old_finished_jobs_and_their_indexes(client, store):
    old = submit(client, external_ref="OLD")
    new = submit(client, external_ref="NEW")
    running = submit(client)
    store.transition(old["id"], ["queued"], "cancelled")
    store.transition(new["id"], ["queued"], "cancelled")
    store.transition(running["id"], ["queued"], "running")
    store.r.zadd(f"{store.p}:finished", {old["id"]: time.time() - 3600})
    assert store.purge_finished(600) == 1
    assert client.get(f"/v1/jobs/{old['id']}", headers=auth()).status_code == 404
    assert client.get("/v1/jobs?external_ref=OLD", headers=auth()).json["items"] == []
    ids = [j["id"] for j in client.get("/v1/jobs", headers=auth()).json["items"]]
    assert ids == [running["id"], new["id"]]
    assert store.counts()["cancelled"] == 1
    assert not store.r.exists(store.k_events(old["id"]))


# --- webhooks: allow-list, give-up, progress steps --------------------------------------


def _hook_job(store, url):
    job, _ = store.create(new_job("merge", "h1", "vms", "d.avhd", external_ref="T-1",
                                  callback={"url": url, "secret": "0123456789abcdef"}))
    return job


def test_webhook_to_a_host_off_the_allow_list_is_never_sent(store):
    job = _hook_job(store, "http://evil.example/hook")
    settings = load({}, webhook_allow_hosts=("tickets.example",))
    assert webhooks.deliver_due(store, settings) == 1
    evs = [e for e in store.events(job.id) if e["type"] == "webhook"]
    assert len(evs) == 1 and not evs[0]["ok"] and "allow-list" in evs[0]["error"]
    assert store.metrics()[0]["webhook_failures"] == 1
    assert store.r.zcard(f"{store.p}:wh:due") == 0        # dropped, not retried


def test_failing_webhook_is_retried_with_backoff_then_given_up_after_max_age(store):
    job = _hook_job(store, "http://127.0.0.1:9/hook")     # discard port: refused
    settings = load({}, webhook_allow_hosts=("127.0.0.1",), webhook_backoff_base=1.0,
                    webhook_max_age=24 * 3600.0, webhook_timeout=1.0)
    t0 = time.time()
    webhooks.deliver_due(store, settings, now=t0)
    due = store.r.zrange(f"{store.p}:wh:due", 0, -1, withscores=True)
    assert len(due) == 1 and t0 + 0.5 <= due[0][1] <= t0 + 2.0    # attempt 1: [base/2, 2b]
    # an attempt long after the first one passes the 24 h budget: given up, visible
    webhooks.deliver_due(store, settings, now=t0 + 24 * 3600)
    evs = store.events(job.id)
    attempts = [e for e in evs if e["type"] == "webhook"]
    assert [e["attempt"] for e in attempts] == [1, 2] and not any(e["ok"] for e in attempts)
    assert any(e["type"] == "webhook_gave_up" and e["attempts"] == 2 for e in evs)
    assert store.r.zcard(f"{store.p}:wh:due") == 0


def test_backoff_spans_up_to_a_day():
    # The cap between attempts is an hour, so a 24 h budget means many attempts, with
    # jitter (not every delay equal).
    delays = [webhooks.backoff(20, 5.0) for _ in range(50)]
    assert max(delays) <= webhooks.MAX_DELAY and len(set(delays)) > 40


# --- rate and ETA ---------------------------------------------------------------------


def test_progress_meter_gives_rate_and_eta():
    from vhdlib.progress import Progress
    from workers.tasks import ProgressMeter
    m = ProgressMeter()
    first = m.update(Progress("merge", "merge", 0, 100, 0, 1000), 10.0)
    assert first["rate"] == 0 and first["eta_seconds"] is None
    second = m.update(Progress("merge", "merge", 100, 1000, 100, 1000), 11.0)
    assert second["rate"] == 100.0 and second["eta_seconds"] == 9.0
    assert second["percent"] == 10.0 and second["done"] == 100 and second["total"] == 1000


# --- vhdmend up without Redis -----------------------------------------------------------


def test_up_without_redis_server_says_how_to_install_it(monkeypatch, tmp_path):
    from vhdmend import up
    monkeypatch.setattr(up.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as e:
        up.redis_command(str(tmp_path), 1)
    assert "redis-server not found" in str(e.value) and "apt-get install" in str(e.value)


def test_openapi_documents_the_stream_query(client):
    doc = client.get("/openapi.json").json
    params = doc["paths"]["/v1/jobs/{job_id}/stream"]["get"].get("parameters", [])
    assert any(p.get("in") == "query" for p in params), json.dumps(params)


# --- Idempotency-Key: a retry racing the first request ----------------------------------


def test_idempotency_retry_while_the_first_request_is_in_flight_is_409_not_a_new_job(
        client, store):
    # Given a first request that has taken the key but not written its job yet (simulated
    # by removing the job it names, as a concurrent retry would see it)
    h = {**auth(), "Idempotency-Key": "ticket-77"}
    first = client.post("/v1/jobs", json=job_body(), headers=h).json
    store.r.delete(store.k_job(first["id"]))
    # When the client retries with the same key and body
    resp = client.post("/v1/jobs", json=job_body(), headers=h)
    # Then it is told to retry (409), and no second job is created
    assert resp.status_code == 409 and resp.content_type == "application/problem+json"
    assert client.get("/v1/jobs", headers=auth()).json["items"] == []
    # And a key whose job never appeared (the first request failed long ago) is taken over
    key = f"{store.p}:idem:writer:ticket-77"
    rec = json.loads(store.r.get(key))
    store.r.set(key, json.dumps({**rec, "at": time.time() - 3600}))
    again = client.post("/v1/jobs", json=job_body(), headers=h)
    assert again.status_code == 202 and again.json["id"] != first["id"]
    assert client.post("/v1/jobs", json=job_body(), headers=h).json["id"] == again.json["id"]
