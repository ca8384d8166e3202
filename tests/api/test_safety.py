"""Defects an outside client found (issue 8, D1, D4, D7, D10, whsec_ secrets)."""

from __future__ import annotations

import pytest

from service import hosts as registry
from service.errors import ServiceError
from service.problems import CATALOGUE, error_codes
from tests.api.conftest import auth, job_body


def _nested(depth: int) -> str:
    return '{"type": "inspect", "host": "h1", "root": "vms", "path": "d.vhd", "options": ' \
        + '{"a": ' * depth + "1" + "}" * depth + "}"


@pytest.mark.parametrize("depth", [40, 500, 1000, 100_000])
def test_deep_json_is_a_422_not_a_500(client, depth):
    resp = client.post("/v1/jobs", data=_nested(depth), content_type="application/json",
                       headers=auth())
    assert resp.status_code == 422, resp.get_data(as_text=True)[:200]
    assert resp.content_type == "application/problem+json"


def test_problem_titles_are_human_and_types_resolve(client):
    bodies = [client.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=auth()),
              client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}),
              client.post("/v1/jobs", json=job_body(path="../x"), headers=auth()),
              client.put("/v1/jobs", headers=auth())]
    for resp in bodies:
        body = resp.json
        assert resp.status_code >= 400
        assert " " in body["title"] or body["title"].islower() or body["title"] in {
            "Forbidden"}, body["title"]
        assert not any(c in body["title"] for c in ("Error", "NotFound", "ClientError"))
        assert "example" not in body["type"]
        page = client.get(body["type"].replace("http://localhost", ""))
        assert page.status_code == 200 and body["title"] in page.get_data(as_text=True)
    assert client.get("/problems/no_such_problem").status_code == 404


def test_catalogue_covers_every_service_error_code():
    assert error_codes(ServiceError) <= set(CATALOGUE)


def _worker(store, tmp_path, host="h1"):
    registry.register(store, host, "w1", {"vms": str(tmp_path)}, ttl=60, queue="q")


def test_plan_needs_write_scope(client, store, tmp_path):
    _worker(store, tmp_path)
    resp = client.post("/v1/plan", json={"host": "h1", "root": "vms", "path": "d.vhd",
                                         "operation": "compact"}, headers=auth("reader"))
    assert resp.status_code == 403


def test_plan_without_a_live_worker_is_503_at_once(client):
    import time
    t0 = time.monotonic()
    resp = client.post("/v1/plan", json={"host": "nobody", "root": "vms", "path": "d.vhd",
                                         "operation": "compact"}, headers=auth())
    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) > 0
    assert resp.json["type"].endswith("/problems/no_live_worker")
    assert time.monotonic() - t0 < 0.5


def test_plan_failure_problem_has_only_problem_fields(app, client, store, tmp_path):
    from api.problems import ProblemSchema
    from tests.api.test_resources import _answer_plans
    _worker(store, tmp_path)
    app.extensions["vhdmend_dispatch"] = _answer_plans(store, "failed")
    resp = client.post("/v1/plan", json={"host": "h1", "root": "vms", "path": "d.vhd",
                                         "operation": "compact"}, headers=auth())
    assert resp.status_code == 422
    ProblemSchema().load(resp.json)  # raises on a field the schema forbids (job_id)
    assert resp.json["title"] == "Not a virtual disk"


def test_callback_off_the_allow_list_is_a_422_at_submit(client, sent):
    resp = client.post("/v1/jobs", json=job_body(callback={
        "url": "https://evil.example/hook", "secret": "0123456789abcdef"}), headers=auth())
    assert resp.status_code == 422 and "allow-list" in resp.json["detail"]
    assert resp.json["type"].endswith("/callback_refused") and not sent.calls


@pytest.mark.parametrize("secret", ["whsec_not base64!!", "whsec_MDEyMzQ1Njc4OQ=="])
def test_bad_whsec_secret_is_a_422_at_submit(client, secret):
    resp = client.post("/v1/jobs", json=job_body(callback={
        "url": "https://tickets.example/hook", "secret": secret}), headers=auth())
    assert resp.status_code == 422 and "whsec_" in resp.json["detail"]


def test_valid_whsec_secret_is_accepted(client):
    resp = client.post("/v1/jobs", json=job_body(callback={
        "url": "https://tickets.example/hook",
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}), headers=auth())
    assert resp.status_code == 202


def test_hosts_show_no_machine_names_or_pids(client, store, tmp_path):
    import os
    import socket

    from service.hosts import worker_id
    wid = worker_id("h1")
    registry.register(store, "h1", wid, {"vms": str(tmp_path)}, ttl=60, queue="q1")
    text = client.get("/v1/hosts", headers=auth()).get_data(as_text=True)
    assert wid in text and f"@{socket.gethostname()}" not in text
    assert f'"{socket.gethostname()}"' not in text
    assert f":{os.getpid()}" not in text and '"pid"' not in text
    assert worker_id("h1") == wid and worker_id("h1", pid=os.getpid() + 1) != wid
    assert wid.startswith("w_") and len(wid) == 18


def _sse(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            out.append(fields)
    return out


def test_stream_has_integer_ids_retry_and_resumes_after_last_event_id(client, store):
    job = client.post("/v1/jobs", json=job_body(), headers=auth()).json
    store.transition(job["id"], ["queued"], "cancelled")
    first = _sse(client.get(f"/v1/jobs/{job['id']}/stream", headers=auth())
                 .get_data(as_text=True))
    assert first[0]["retry"] == "2000"
    jobs = [e for e in first if e.get("event") == "job"]
    assert jobs and all(e["id"].isdigit() for e in jobs)
    last = jobs[-1]["id"]
    again = client.get(f"/v1/jobs/{job['id']}/stream",
                       headers={**auth(), "Last-Event-ID": last}).get_data(as_text=True)
    assert [e for e in _sse(again) if e.get("event") == "job"] == []  # nothing repeats
    older = client.get(f"/v1/jobs/{job['id']}/stream",
                       headers={**auth(), "Last-Event-ID": str(int(last) - 1)})
    assert [e["id"] for e in _sse(older.get_data(as_text=True)) if "id" in e] == [last]
    bad = client.get(f"/v1/jobs/{job['id']}/stream",
                     headers={**auth(), "Last-Event-ID": "1.5"})
    assert bad.status_code == 422
