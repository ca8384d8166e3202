"""End to end through real processes: HTTP API -> Redis -> Celery worker -> disk."""

from __future__ import annotations

import time

import pytest

from tests.workers.conftest import http, random_file, wait_for
from workers import webhooks

SIZE = 4 << 20  # 16 chunks of 256 KiB, 0.1 s each


def submit(stack, path="disk.bin", output="out.bin", host="h1", **extra):
    status, job, headers = http("POST", f"{stack.url}/v1/jobs", {
        "type": "convert", "host": host, "root": "vms", "path": path,
        "options": {"output": output}, **extra})
    assert status == 202, job
    assert headers["Location"] == f"/v1/jobs/{job['id']}"
    return job["id"]


def get(stack, job_id):
    return http("GET", f"{stack.url}/v1/jobs/{job_id}")[1]


def wait_state(stack, job_id, states, timeout=40.0):
    states = {states} if isinstance(states, str) else set(states)
    try:
        return wait_for(lambda: (j := get(stack, job_id))["state"] in states and j,
                        timeout, what=f"job {job_id} in {states}")
    except AssertionError:
        print(stack.logs())
        print(get(stack, job_id))
        raise


def chunks_written(stack, output="out.bin"):
    return (stack.root / f"{output}.chunks").read_text().split()


def test_submit_progress_success_and_signed_webhooks(stack, httpserver):
    # Given a worker, the API and a ticketing system listening for webhooks
    data = random_file(stack.root / "disk.bin", SIZE)
    stack.worker()
    stack.api()
    secret = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OQ=="
    received = []

    def hook(request):
        from werkzeug import Response
        assert webhooks.verify(secret, dict(request.headers), request.get_data())
        received.append(request.get_json())
        return Response("ok")
    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    # When a job is submitted over HTTP
    job_id = submit(stack, external_ref="INC-7",
                    callback={"url": httpserver.url_for("/hook"), "secret": secret})
    # Then progress is visible while it runs, and it succeeds with the right bytes
    seen = wait_for(lambda: (j := get(stack, job_id)).get("progress")
                    and 0 < j["progress"]["percent"] < 100 and j, 30, what="progress")
    assert seen["state"] == "running" and seen["progress"]["total"] == SIZE
    job = wait_state(stack, job_id, "succeeded")
    assert (stack.root / "out.bin").read_bytes() == data
    assert job["attempts"] == 1 and job["fence"] >= 1 and job["progress"]["percent"] == 100
    # And the receiver saw every transition, signed, with the ticket reference
    wait_for(lambda: any(r["type"] == "job.succeeded" for r in received), 20,
             what="webhook for success")
    types = [r["type"] for r in received]
    assert {"job.created", "job.running", "job.progress", "job.succeeded"} <= set(types)
    assert all(r["data"]["external_ref"] == "INC-7" for r in received)
    assert all("secret" not in str(r) for r in received)
    events = http("GET", f"{stack.url}/v1/jobs/{job_id}/events")[1]["items"]
    attempts = [e for e in events if e["type"] == "webhook"]
    assert attempts and all(e["ok"] for e in attempts)
    # The worker registered its host and the metrics count the bytes
    hosts = http("GET", f"{stack.url}/v1/hosts")[1]["items"]
    assert hosts[0]["host"] == "h1" and "vms" in hosts[0]["roots"]


def test_webhook_failures_are_retried_and_recorded(stack, httpserver):
    random_file(stack.root / "disk.bin", 256 << 10)
    stack.worker()
    stack.api()
    calls = []

    def flaky(request):
        from werkzeug import Response
        calls.append(request.headers["webhook-id"])
        return Response("busy", status=503 if len(calls) < 3 else 200)
    httpserver.expect_request("/hook").respond_with_handler(flaky)
    job_id = submit(stack, callback={"url": httpserver.url_for("/hook"),
                                     "secret": "a-plain-secret-of-16+"})
    wait_state(stack, job_id, "succeeded")
    wait_for(lambda: len(calls) >= 4, 30, what="retries")
    events = http("GET", f"{stack.url}/v1/jobs/{job_id}/events")[1]["items"]
    failed = [e for e in events if e["type"] == "webhook" and not e["ok"]]
    assert len(failed) >= 2 and failed[0]["status"] == 503
    # a retry reuses the delivery id, so receivers can de-duplicate
    assert max(calls.count(c) for c in calls) >= 2


def test_cancel_between_chunks_leaves_originals(stack):
    data = random_file(stack.root / "disk.bin", SIZE)
    stack.worker()
    stack.api()
    job_id = submit(stack)
    wait_for(lambda: (get(stack, job_id).get("progress") or {}).get("percent", 0) > 10, 30)
    status, job, _ = http("POST", f"{stack.url}/v1/jobs/{job_id}/cancel")
    assert status == 202 and job["state"] == "cancelling"
    job = wait_state(stack, job_id, "cancelled")
    assert job["progress"]["percent"] < 100
    assert (stack.root / "disk.bin").read_bytes() == data
    assert not (stack.root / "out.bin").exists()
    assert not (stack.root / "out.bin.partial").exists()
    assert not (stack.root / "out.bin.vhdmend.json").exists()


def test_pause_then_resume_finishes_bit_identical(stack):
    data = random_file(stack.root / "disk.bin", SIZE)
    stack.worker()
    stack.api()
    job_id = submit(stack)
    wait_for(lambda: (get(stack, job_id).get("progress") or {}).get("percent", 0) > 10, 30)
    assert http("POST", f"{stack.url}/v1/jobs/{job_id}/pause")[1]["state"] == "pausing"
    paused = wait_state(stack, job_id, "paused")
    assert paused["checkpoint"] is True
    done_at_pause = len(chunks_written(stack))
    time.sleep(0.5)
    assert len(chunks_written(stack)) == done_at_pause     # nothing runs while paused
    assert http("POST", f"{stack.url}/v1/jobs/{job_id}/resume")[1]["state"] == "queued"
    wait_state(stack, job_id, "succeeded")
    assert (stack.root / "out.bin").read_bytes() == data
    written = chunks_written(stack)
    assert len(written) - len(set(written)) <= 1


def test_two_jobs_on_one_chain_run_one_after_the_other(stack):
    data = random_file(stack.root / "disk.bin", 2 << 20)
    stack.worker()
    stack.worker()                       # a second worker of the same host
    stack.api()
    stack.ready("h1", 2)
    a = submit(stack, output="a.bin")
    b = submit(stack, output="b.bin")
    # One of them waits in queued, saying why
    waiting = wait_for(lambda: next((j for j in (get(stack, a), get(stack, b))
                                     if j["state"] == "queued" and j.get("reason")), None),
                       30, what="a job waiting for the chain lock")
    assert "chain lock" in waiting["reason"]
    ja, jb = wait_state(stack, a, "succeeded"), wait_state(stack, b, "succeeded")
    assert (stack.root / "a.bin").read_bytes() == data == (stack.root / "b.bin").read_bytes()
    first, second = sorted((ja, jb), key=lambda j: j["finished_at"])
    assert second["fence"] > first["fence"]
    ev = http("GET", f"{stack.url}/v1/jobs/{second['id']}/events")[1]["items"]
    running_at = [e["at"] for e in ev if e.get("to") == "running"]
    assert running_at[-1] >= first["finished_at"]      # never both running


def test_path_escapes_are_refused_by_the_worker(stack, tmp_path):
    outside = tmp_path / "outside.bin"
    random_file(outside, 1024)
    (stack.root / "link.bin").symlink_to(outside)
    (stack.root / "null.bin").symlink_to("/dev/null")
    stack.worker()
    stack.api()
    for name in ("link.bin", "null.bin", "missing.bin"):
        job_id = submit(stack, path=name, output=f"{name}.out")
        job = wait_state(stack, job_id, "failed")
        assert job["error"]["type"] == "path_refused", job
    assert not (stack.root / "link.bin.out").exists()
    status, problem, _ = http("POST", f"{stack.url}/v1/jobs", {
        "type": "convert", "host": "h1", "root": "vms", "path": "../outside.bin",
        "options": {"output": "x.bin"}})
    assert status == 422
    status, problem, _ = http("POST", f"{stack.url}/v1/jobs", {
        "type": "convert", "host": "h1", "root": "other", "path": "disk.bin",
        "options": {"output": "x.bin"}})
    assert status == 422 and problem["type"].endswith("unknown_root")


@pytest.mark.slow
def test_kill_9_mid_job_then_restart_resumes_bit_identical(stack):
    data = random_file(stack.root / "disk.bin", SIZE)
    worker = stack.worker()
    stack.api()
    job_id = submit(stack)
    wait_for(lambda: (get(stack, job_id).get("progress") or {}).get("percent", 0) >= 30, 30)
    worker.kill9()
    before = len(chunks_written(stack))
    assert get(stack, job_id)["state"] == "running"    # nobody knows yet
    stack.worker()
    job = wait_state(stack, job_id, "succeeded", timeout=60)
    assert (stack.root / "out.bin").read_bytes() == data
    assert job["attempts"] == 2
    written = chunks_written(stack)
    assert len(written) - len(set(written)) <= 1, "more than one chunk redone"
    assert 0 < before < len(written)
    events = http("GET", f"{stack.url}/v1/jobs/{job_id}/events")[1]["items"]
    assert any(e["type"] == "reaped" for e in events)


@pytest.mark.slow
def test_redis_restart_mid_job(stack):
    data = random_file(stack.root / "disk.bin", SIZE)
    stack.worker()
    stack.api()
    job_id = submit(stack)
    wait_for(lambda: (get(stack, job_id).get("progress") or {}).get("percent", 0) >= 20, 30)
    stack.server.stop()
    time.sleep(1.0)
    stack.server.start()
    job = wait_state(stack, job_id, "succeeded", timeout=60)
    assert (stack.root / "out.bin").read_bytes() == data
    written = chunks_written(stack)
    assert len(written) - len(set(written)) <= 1
    assert job["attempts"] <= 2
