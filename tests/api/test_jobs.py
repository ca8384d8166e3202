"""The jobs resource: submit, read, list, idempotency, actions, events, errors."""

from __future__ import annotations

import json

import pytest

from service import hosts as registry
from service.config import load
from tests.api.conftest import auth, job_body


def submit(client, **over):
    resp = client.post("/v1/jobs", json=job_body(**over), headers=auth())
    assert resp.status_code == 202, resp.json
    return resp


def test_submit_is_202_with_location_and_retry_after(client, sent):
    resp = submit(client, external_ref="INC-1")
    job = resp.json
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert int(resp.headers["Retry-After"]) > 0
    assert job["state"] == "queued" and job["requested_by"] == "writer"
    assert job["external_ref"] == "INC-1" and len(job["id"]) == 26
    assert sent.calls == [(job["id"], "h1")]
    got = client.get(resp.headers["Location"], headers=auth("reader"))
    assert got.status_code == 200 and got.json["id"] == job["id"]


def test_callback_secret_is_never_shown(client):
    job = submit(client, callback={"url": "http://127.0.0.1:9/hook",
                                   "secret": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="}).json
    assert job["callback"] == {"url": "http://127.0.0.1:9/hook"}
    again = client.get(f"/v1/jobs/{job['id']}", headers=auth()).json
    assert "secret" not in str(again)


@pytest.mark.parametrize("body,field", [
    (job_body(path="../etc/passwd"), "path"),
    (job_body(path="/etc/passwd"), "path"),
    (job_body(path="a/../../b"), "path"),
    (job_body(path="C:\\Windows"), "path"),
    (job_body(options={"output": "../out.vhd"}), "options"),
    (job_body(options={"output": "/abs.vhd"}), "options"),
    (job_body(options={}), "options"),                     # convert needs output
    (job_body(options={"output": "x.vhd", "colour": "red"}), "options"),
    (job_body(type="format-c"), "type"),
    (job_body(host="bad host!"), "host"),
    ({**job_body(), "surprise": 1}, "surprise"),
    (job_body(callback={"url": "ftp://x/y", "secret": "0123456789abcdef"}), "callback"),
    (job_body(callback={"url": "http://127.0.0.1/y", "secret": "short"}), "callback"),
    (job_body(type="remediate", options={"archive": "old", "delete": True}), "options"),
    (job_body(type="plan", options={"operation": "explode"}), "options"),
    (job_body(type="compact", options={"reclaim": "everything"}), "options"),
])
def test_invalid_bodies_are_422_with_field_errors(client, body, field):
    resp = client.post("/v1/jobs", json=body, headers=auth())
    assert resp.status_code == 422
    assert resp.content_type == "application/problem+json"
    assert field in resp.json["errors"]


@pytest.mark.parametrize("job_type,options", [
    ("compact", {"reclaim": "fs"}),
    ("convert", {"output": "x.vhdx", "reclaim": "fs"}),
    ("remediate", {"reclaim": "zeros"}),
])
def test_reclaim_option_is_accepted(client, sent, job_type, options):
    resp = client.post("/v1/jobs", json=job_body(type=job_type, options=options),
                       headers=auth())
    assert resp.status_code == 202, resp.json


@pytest.mark.parametrize("data,ctype", [(b"not json", "application/json"),
                                        (b"[1,2]", "application/json"),
                                        (b"{}", "text/plain")])
def test_non_object_bodies_are_422(client, data, ctype):
    resp = client.post("/v1/jobs", data=data, content_type=ctype, headers=auth())
    assert resp.status_code == 422


def test_idempotency_key_same_body_same_job(client, sent):
    h = {**auth(), "Idempotency-Key": "ticket-42"}
    a = client.post("/v1/jobs", json=job_body(), headers=h)
    b = client.post("/v1/jobs", json=job_body(), headers=h)
    assert a.status_code == b.status_code == 202
    assert a.json["id"] == b.json["id"]
    assert len(sent.calls) == 1


def test_idempotency_key_other_body_is_422(client):
    h = {**auth(), "Idempotency-Key": "ticket-43"}
    assert client.post("/v1/jobs", json=job_body(), headers=h).status_code == 202
    resp = client.post("/v1/jobs", json=job_body(path="other.vhd"), headers=h)
    assert resp.status_code == 422
    assert resp.json["type"].endswith("/idempotency_key_reused")


def test_idempotency_keys_are_per_token(client):
    a = client.post("/v1/jobs", json=job_body(), headers={**auth("writer"),
                                                          "Idempotency-Key": "k"})
    b = client.post("/v1/jobs", json=job_body(), headers={**auth("admin"),
                                                          "Idempotency-Key": "k"})
    assert a.json["id"] != b.json["id"]


def test_list_filters_and_pages(client):
    ids = [submit(client, host="h1" if i % 2 else "h2", external_ref=f"T{i % 3}").json["id"]
           for i in range(7)]
    everything = client.get("/v1/jobs?limit=200", headers=auth()).json
    assert [j["id"] for j in everything["items"]] == ids[::-1]   # newest first
    assert everything["next_page_token"] is None
    seen, token = [], None
    while True:
        q = "/v1/jobs?limit=3" + (f"&page_token={token}" if token else "")
        page = client.get(q, headers=auth()).json
        seen += [j["id"] for j in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == ids[::-1]
    h1 = client.get("/v1/jobs?host=h1", headers=auth()).json["items"]
    assert {j["host"] for j in h1} == {"h1"} and len(h1) == 3
    t0 = client.get("/v1/jobs?external_ref=T0&host=h2", headers=auth()).json["items"]
    assert [j["id"] for j in t0] == [ids[6], ids[0]]  # T0 on h2: jobs 0 and 6, newest first
    queued = client.get("/v1/jobs?state=queued&limit=2", headers=auth()).json
    assert len(queued["items"]) == 2 and queued["next_page_token"]


def test_list_filters_by_type_across_pages(client):
    inspect = submit(client, type="inspect", options={}).json["id"]
    converts = [submit(client).json["id"] for _ in range(5)]
    got = client.get("/v1/jobs?type=inspect&limit=2", headers=auth()).json
    assert [j["id"] for j in got["items"]] == [inspect] and got["next_page_token"] is None
    seen, token = [], None
    while True:
        q = "/v1/jobs?type=convert&state=queued&limit=2" + (f"&page_token={token}"
                                                            if token else "")
        page = client.get(q, headers=auth()).json
        seen += [j["id"] for j in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == converts[::-1]
    assert client.get("/v1/jobs?type=merge", headers=auth()).json["items"] == []
    bad = client.get("/v1/jobs?type=defrag", headers=auth())
    assert bad.status_code == 422 and bad.content_type == "application/problem+json"
    assert "type" in bad.get_data(as_text=True)
    params = {p["name"]: p for p in
              client.get("/openapi.json").json["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert "merge" in params["type"]["schema"]["enum"]


@pytest.mark.parametrize("q", ["state=bogus", "type=bogus", "limit=0", "limit=abc",
                               "page_token=%%%", "page_token=AAAA", "colour=red"])
def test_bad_list_queries_are_422(client, q):
    resp = client.get(f"/v1/jobs?{q}", headers=auth())
    assert resp.status_code == 422, resp.json


def test_cancel_pause_resume_state_machine(client, store, sent):
    job = submit(client).json
    url = f"/v1/jobs/{job['id']}"
    assert client.post(url + "/pause", headers=auth()).json["state"] == "paused"
    r = client.post(url + "/resume", headers=auth())
    assert r.status_code == 202 and r.json["state"] == "queued"
    assert sent.calls[-1] == (job["id"], "h1")
    assert client.post(url + "/resume", headers=auth()).status_code == 409
    assert client.post(url + "/cancel", headers=auth()).json["state"] == "cancelled"
    conflict = client.post(url + "/cancel", headers=auth())
    assert conflict.status_code == 409
    assert conflict.content_type == "application/problem+json"
    events = client.get(url + "/events", headers=auth()).json
    states = [e["to"] for e in events["items"] if e["type"] == "state"]
    assert states == ["queued", "paused", "queued", "cancelled"]
    assert events["next"] == len(events["items"])


def test_running_job_cancel_and_pause_ask_the_worker(client, store):
    job = submit(client).json
    store.transition(job["id"], ["queued"], "running")
    url = f"/v1/jobs/{job['id']}"
    assert client.post(url + "/pause", headers=auth()).json["state"] == "pausing"
    assert client.post(url + "/cancel", headers=auth()).json["state"] == "cancelling"


def test_action_rejects_unknown_body_fields(client):
    job = submit(client).json
    resp = client.post(f"/v1/jobs/{job['id']}/cancel", json={"force": True}, headers=auth())
    assert resp.status_code == 422


@pytest.mark.parametrize("path", ["/v1/jobs/01J0000000000000000000000A",
                                  "/v1/jobs/not-a-ulid", "/v1/jobs/not-a-ulid/events",
                                  "/v1/jobs/01J0000000000000000000000A/cancel"])
def test_unknown_jobs_are_404_problems(client, path):
    method = client.post if path.endswith("cancel") else client.get
    resp = method(path, headers=auth())
    assert resp.status_code == 404
    assert resp.content_type == "application/problem+json"


def test_404_405_are_problems(client):
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json["status"] == 404
    r = client.delete("/v1/jobs", headers=auth())
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert r.content_type == "application/problem+json"


def test_500_is_a_problem_without_internals(client, store, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internals")
    monkeypatch.setattr(store, "find", boom)
    r = client.get("/v1/jobs", headers=auth())
    assert r.status_code == 500
    assert r.content_type == "application/problem+json"
    assert "secret internals" not in r.get_data(as_text=True)


def test_unknown_root_on_a_live_host_is_422(client, store):
    registry.register(store, "h1", "w1", {"vms": "/tmp"}, ttl=60, queue="q")
    resp = client.post("/v1/jobs", json=job_body(root="nothere"), headers=auth())
    assert resp.status_code == 422 and resp.json["type"].endswith("/unknown_root")
    ok = client.post("/v1/jobs", json=job_body(), headers=auth())
    assert ok.status_code == 202 and ok.json["reason"] is None


def test_stream_sends_the_job_until_it_ends(client, store):
    job = submit(client).json
    store.transition(job["id"], ["queued"], "cancelled")
    resp = client.get(f"/v1/jobs/{job['id']}/stream", headers=auth())
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    text = resp.get_data(as_text=True)
    retry, _, text = text.partition("\n")  # the stream opens with ``retry:`` (issue 8 D6)
    assert retry.startswith("retry: ")
    assert text.startswith("event: job") and '"state": "cancelled"' in text


@pytest.mark.parametrize("extra", [
    {},
    {"callback": {"url": "https://tickets.example/hook", "secret": "s3cret-s3cret-s3cret"},
     "external_ref": 'INC-"7"\u00e9'},
])
def test_status_poll_json_equals_the_public_view(store, extra):
    # Given a job as a worker leaves it mid-run (progress, checkpoint, fence, chunks)
    from service.job import new_job, public_json
    job, _ = store.create(new_job("merge", "h1", "vms", "vm1/d.avhd", **extra))
    store.transition(job.id, None, "running", set_fields={
        "progress": {"done": 1, "total": 2, "percent": 50.0, "rate": 1.5, "eta_seconds": None},
        "checkpoint": {"journal": "/x.vhdmend.json"}, "fence": 3, "chunks": 7,
        "lease_token": "t0k", "error": None})
    raw = store.get_raw(job.id)
    # Then the spliced JSON of the hot path is the public view, secrets and tokens left out
    assert json.loads(public_json(raw)) == json.loads(json.dumps(store.get(job.id).to_public()))
    assert b"t0k" not in public_json(raw) and b"s3cret" not in public_json(raw)


@pytest.mark.parametrize("url,body", [
    ("/v1/jobs", job_body(type="compact", options={"reclaim": "everything"})),
    ("/v1/jobs", job_body(options={"output": "x.vhdx", "reclaim": "all"})),
    ("/v1/jobs", job_body(type="remediate", options={"reclaim": True})),
    ("/v1/plan", {"host": "h1", "root": "vms", "path": "d.vhd", "operation": "compact",
                  "options": {"reclaim": "free"}}),
])
def test_an_unknown_reclaim_mode_is_422_naming_the_field(client, url, body):
    resp = client.post(url, json=body, headers=auth())
    assert resp.status_code == 422
    assert resp.content_type == "application/problem+json"
    assert list(resp.json["errors"]) == ["options"]
    assert list(resp.json["errors"]["options"]) == ["reclaim"]


@pytest.fixture(scope="module")
def ext4_disk(tmp_path_factory):
    """A 16 MiB dynamic VHD (qemu-img) holding ext4 at sector 0 (mke2fs over stale bytes),
    whose guest deleted an 8 MiB file: free blocks full of junk for --reclaim fs."""
    import subprocess

    from tests.conftest import require_tool
    from tests.vhdlib.volume import guests

    require_tool("qemu-img")
    tmp = tmp_path_factory.mktemp("api-reclaim")
    src = guests.files(tmp / "src", {"keep": guests.MiB + 7, "gone": 8 * guests.MiB})
    raw = tmp / "disk.img"
    guests.stale(raw, 16 * guests.MiB, seed=3)
    guests.mke2fs(raw, "-t", "ext4", src=src)
    guests.debugfs_w(raw, "rm gone")
    vhd = tmp / "disk.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
                    "subformat=dynamic", str(raw), str(vhd)], check=True)
    return vhd


def _cli_and_ops_figures(disk, tmp_path):
    """What ``vhdmend compact --reclaim fs --plan --json`` and an in-process
    ``ops.prepare(...).run()`` report for copies of ``disk``."""
    import shutil
    import subprocess
    import sys

    from vhdlib import ops

    cli_copy, ops_copy = tmp_path / "cli.vhd", tmp_path / "ops.vhd"
    shutil.copyfile(disk, cli_copy)
    shutil.copyfile(disk, ops_copy)
    out = subprocess.run([sys.executable, "-m", "vhdmend", "compact", "--reclaim", "fs",
                          "--plan", "--json", str(cli_copy)], check=True,
                         capture_output=True).stdout
    op = ops.prepare("compact", str(ops_copy), reclaim="fs")
    return json.loads(out), op.plan.details["reclaim"], op.run()


def test_reclaim_reaches_ops_prepare(client, store, tmp_path, monkeypatch, ext4_disk):
    """Over HTTP, then the job's execution in-process (the worker's JobRun on the same
    store) with vhdlib's real engine: ``reclaim`` arrives in ``ops.prepare``, its plan is
    the file-system one, and the job drops what the CLI and ops drop on the same disk."""
    import os
    import shutil

    from vhdlib import ops
    from workers import tasks

    cli_plan, ops_reclaim, ops_result = _cli_and_ops_figures(ext4_disk, tmp_path)
    (tmp_path / "vm1").mkdir()
    disk = tmp_path / "vm1" / "disk.vhd"
    shutil.copyfile(ext4_disk, disk)
    seen: list[dict] = []
    real = ops.prepare

    def prepare(kind, path, *args, **options):
        seen.append({"kind": kind, **options})
        return real(kind, path, *args, **options)

    monkeypatch.setattr(ops, "prepare", prepare)
    resp = client.post("/v1/jobs", json=job_body(type="compact", path="vm1/disk.vhd",
                                                 options={"reclaim": "fs"}), headers=auth())
    assert resp.status_code == 202, resp.json
    job_id = resp.json["id"]
    settings = load({}, prefix="t", roots={"vms": str(tmp_path)}, progress_interval=0.0)
    assert tasks.JobRun(job_id, store, settings, send=lambda j, h: None).run() == "succeeded"
    assert [(s["kind"], s["reclaim"]) for s in seen] == [("compact", "fs")]
    job = client.get(f"/v1/jobs/{job_id}", headers=auth()).json
    assert job["state"] == "succeeded"
    reclaim = job["plan"]["details"]["reclaim"]
    assert reclaim["mode"] == "fs"
    assert [p["file_system"] for p in reclaim["partitions"]] == ["ext4"]
    # The deleted 8 MiB file's whole 2 MiB blocks (at least 3 of them) are dropped ...
    assert reclaim["dropped_bytes"] >= 3 * (2 << 20)
    # ... the same figure as the CLI's dry run and as ops on the same disk.
    assert reclaim["dropped_bytes"] == cli_plan["details"]["reclaim"]["dropped_bytes"]
    assert reclaim == ops_reclaim
    result = job["result"]
    assert result["dropped_blocks"] == ops_result["dropped_blocks"]
    assert result["file_size"] == ops_result["file_size"] == os.path.getsize(disk)
    assert result["file_size"] < os.path.getsize(ext4_disk) - reclaim["dropped_bytes"] // 2
