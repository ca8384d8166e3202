"""End to end through real processes: HTTP API -> Redis -> Celery worker -> vhdlib -> disk.

Every job runs vhdlib's real engine on a real chain; results are compared byte for byte
with an uninterrupted in-process run of the same operation on a copy of the chain
(:func:`reference_run`), and chunks are counted against that run's checkpoints.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.chains import file_sha256
from tests.workers.conftest import (
    OUTPUT_IDS,
    TOKEN,
    http,
    make_chain,
    reference_run,
    virtual_sha,
    wait_for,
)
from vhdlib.check import check
from workers import webhooks


def submit(stack, body):
    status, job, headers = http("POST", f"{stack.url}/v1/jobs",
                                {"host": "h1", "root": "vms", **body})
    assert status == 202, job
    assert headers["Location"] == f"/v1/jobs/{job['id']}"
    return job["id"]


def merge_job(chain):
    """Merge the newest snapshot into its parent (in place; the parent is the target)."""
    return {"type": "merge", "path": f"vm1/{chain[-1].name}"}


def get(stack, job_id):
    return http("GET", f"{stack.url}/v1/jobs/{job_id}")[1]


def events(stack, job_id):
    return http("GET", f"{stack.url}/v1/jobs/{job_id}/events")[1]["items"]


def wait_state(stack, job_id, states, timeout=60.0):
    states = {states} if isinstance(states, str) else set(states)
    try:
        return wait_for(lambda: (j := get(stack, job_id))["state"] in states and j,
                        timeout, what=f"job {job_id} in {states}")
    except AssertionError:
        print(stack.logs())
        print(get(stack, job_id))
        raise


def wait_percent(stack, job_id, percent, timeout=60.0):
    return wait_for(lambda: (get(stack, job_id).get("progress") or {}).get("percent", 0)
                    >= percent, timeout, what=f"job {job_id} at {percent}%")


def running_merge(stack, percent=20):
    """A merge of a fresh chain in vm1 (a new worker, through the API) at ``percent`` or
    more: the chain, its uninterrupted reference run, the worker and the job's id."""
    chain = make_chain(stack.root / "vm1")
    ref = reference_run(stack.root / "vm1", stack.tmp, "merge", chain[-1].name, chain[-2].name)
    worker = stack.worker()
    stack.api()
    job_id = submit(stack, merge_job(chain))
    wait_percent(stack, job_id, percent)
    return chain, ref, worker, job_id


def paused_merge(stack):
    """:func:`running_merge` paused at 20 % or more: the chain, its uninterrupted
    reference run, the job's id and the paused job."""
    chain, ref, _worker, job_id = running_merge(stack)
    assert http("POST", f"{stack.url}/v1/jobs/{job_id}/pause")[1]["state"] == "pausing"
    return chain, ref, job_id, wait_state(stack, job_id, "paused")


def stored_checkpoint(stack, job_id):
    """The last position the job's executions reported to Redis (phase, cursor, done)."""
    raw = stack.server.client().hget(f"{stack.prefix}:job:{job_id}", "checkpoint")
    return json.loads(raw) if raw else None


def position(state):
    """Order of checkpoints: phase index, then cursor (merge phases: merge, retire)."""
    return ({"merge": 0, "retire": 1, "done": 2}[state["phase"]], int(state["cursor"]))


def assert_at_most_one_chunk_redone(job, ref):
    # Each chunk ends in a checkpoint, counted on the job over all executions. A run that
    # resumed from an older checkpoint than the last one it made would repeat completed
    # chunks, each with a second checkpoint: the count would exceed the uninterrupted
    # run's. Only the chunk in flight at the crash is redone (it had no checkpoint yet).
    # Each interrupted execution may have missed reporting its last checkpoint (made in the
    # journal, not yet in Redis), hence one fewer per extra attempt.
    low = ref.checkpoints - (job["attempts"] - 1)
    assert low <= job["chunks"] <= ref.checkpoints, (job["chunks"], job["attempts"], ref)


def test_submit_progress_success_and_signed_webhooks(stack, httpserver):
    # Given a real chain, a worker, the API and a ticketing system listening for webhooks
    chain = make_chain(stack.root / "vm1", size=8 << 20)
    options = {"output": "vm1/flat.vhd", "type": "fixed", **OUTPUT_IDS}
    ref = reference_run(stack.root / "vm1", stack.tmp, "remediate", chain[-1].name,
                        "flat.vhd", **{**options, "output": "flat.vhd"})
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
    # When a remediation is submitted over HTTP
    job_id = submit(stack, {"type": "remediate", "path": f"vm1/{chain[-1].name}",
                            "options": options, "external_ref": "INC-7",
                            "callback": {"url": httpserver.url_for("/hook"), "secret": secret}})
    # Then progress is visible while it runs, and it succeeds with the reference's bytes
    seen = wait_for(lambda: (j := get(stack, job_id)).get("progress")
                    and 0 < j["progress"]["percent"] < 100 and j, 30, what="progress")
    assert seen["state"] == "running" and seen["progress"]["total"] > 0
    job = wait_state(stack, job_id, "succeeded")
    assert file_sha256(stack.root / "vm1" / "flat.vhd") == ref.sha256
    assert job["attempts"] == 1 and job["fence"] >= 1 and job["progress"]["percent"] == 100
    assert job["chunks"] == ref.checkpoints
    assert not list((stack.root / "vm1").glob("*.vhdmend.json*"))
    # And the receiver saw every transition, signed, with the ticket reference
    wait_for(lambda: any(r["type"] == "job.succeeded" for r in received), 20,
             what="webhook for success")
    types = [r["type"] for r in received]
    assert {"job.created", "job.running", "job.progress", "job.succeeded"} <= set(types)
    assert all(r["data"]["external_ref"] == "INC-7" for r in received)
    assert all("secret" not in str(r) for r in received)
    attempts = [e for e in events(stack, job_id) if e["type"] == "webhook"]
    assert attempts and all(e["ok"] for e in attempts)
    hosts = http("GET", f"{stack.url}/v1/hosts")[1]["items"]
    assert hosts[0]["host"] == "h1" and "vms" in hosts[0]["roots"]
    # And /metrics counts one latency sample per checkpoint and the bytes processed
    import urllib.request
    req = urllib.request.Request(f"{stack.url}/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        metrics = resp.read().decode()
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                   if line and not line.startswith("#"))
    assert int(float(samples["vhdmend_chunk_seconds_count"])) == ref.checkpoints
    assert int(float(samples["vhdmend_bytes_processed_total"])) > 0


def test_webhook_failures_are_retried_and_recorded(stack, httpserver):
    chain = make_chain(stack.root / "vm1", size=4 << 20)
    stack.worker()
    stack.api()
    calls = []

    def flaky(request):
        from werkzeug import Response
        calls.append(request.headers["webhook-id"])
        return Response("busy", status=503 if len(calls) < 3 else 200)
    httpserver.expect_request("/hook").respond_with_handler(flaky)
    job_id = submit(stack, {"type": "inspect", "path": f"vm1/{chain[-1].name}",
                            "callback": {"url": httpserver.url_for("/hook"),
                                         "secret": "a-plain-secret-of-16+"}})
    wait_state(stack, job_id, "succeeded")
    wait_for(lambda: len(calls) >= 4, 30, what="retries")
    failed = [e for e in events(stack, job_id) if e["type"] == "webhook" and not e["ok"]]
    assert len(failed) >= 2 and failed[0]["status"] == 503
    # a retry reuses the delivery id, so receivers can de-duplicate
    assert max(calls.count(c) for c in calls) >= 2


def test_cancel_between_chunks_leaves_originals_valid(stack):
    chain = make_chain(stack.root / "vm1")
    before = virtual_sha(chain[-1])
    stack.worker()
    stack.api()
    job_id = submit(stack, merge_job(chain))
    wait_percent(stack, job_id, 20)
    status, job, _ = http("POST", f"{stack.url}/v1/jobs/{job_id}/cancel")
    assert status == 202 and job["state"] == "cancelling"
    job = wait_state(stack, job_id, "cancelled")
    assert job["progress"]["percent"] < 100
    # Every layer is still there, checks clean, and the VM's disk reads as before
    assert all(p.exists() for p in chain)
    for p in chain:
        assert check(str(p)).clean, check(str(p)).to_dict()
    assert virtual_sha(chain[-1]) == before
    assert not list((stack.root / "vm1").glob("*.vhdmend.json*"))


def test_pause_then_resume_finishes_bit_identical(stack):
    chain, ref, job_id, paused = paused_merge(stack)
    assert paused["checkpoint"] is True and 0 < paused["chunks"] < ref.checkpoints
    time.sleep(0.5)
    assert get(stack, job_id)["chunks"] == paused["chunks"]     # nothing runs while paused
    assert http("POST", f"{stack.url}/v1/jobs/{job_id}/resume")[1]["state"] == "queued"
    job = wait_state(stack, job_id, "succeeded")
    assert file_sha256(chain[-2]) == ref.sha256
    assert job["chunks"] == ref.checkpoints                       # nothing redone
    assert not chain[-1].exists()                                 # the merged layer retired


def test_two_jobs_on_one_chain_run_one_after_the_other(stack):
    chain = make_chain(stack.root / "vm1", size=4 << 20)
    options = {"type": "fixed", **OUTPUT_IDS}
    ref = reference_run(stack.root / "vm1", stack.tmp, "remediate", chain[-1].name,
                        "out.vhd", output="out.vhd", **options)
    stack.worker()
    stack.worker()                       # a second worker of the same host
    stack.api()
    stack.ready("h1", 2)
    a, b = (submit(stack, {"type": "remediate", "path": f"vm1/{chain[-1].name}",
                           "options": {"output": f"vm1/{name}.vhd", **options}})
            for name in ("a", "b"))
    # One of them waits in queued, saying why
    waiting = wait_for(lambda: next((j for j in (get(stack, a), get(stack, b))
                                     if j["state"] == "queued" and j.get("reason")), None),
                       30, what="a job waiting for the chain lock")
    assert "chain lock" in waiting["reason"]
    ja, jb = wait_state(stack, a, "succeeded"), wait_state(stack, b, "succeeded")
    assert (file_sha256(stack.root / "vm1" / "a.vhd") == ref.sha256
            == file_sha256(stack.root / "vm1" / "b.vhd"))
    first, second = sorted((ja, jb), key=lambda j: j["finished_at"])
    assert second["fence"] > first["fence"]
    running_at = [e["at"] for e in events(stack, second["id"]) if e.get("to") == "running"]
    assert running_at[-1] >= first["finished_at"]      # never both running


def test_path_escapes_are_refused_by_the_worker(stack, tmp_path):
    outside = tmp_path / "outside"
    chain = make_chain(outside, size=4 << 20)
    (stack.root / "link.vhd").symlink_to(chain[0])
    (stack.root / "null.vhd").symlink_to("/dev/null")
    # A snapshot inside the root whose parent locators lead out of it
    (stack.root / "child.avhd").write_bytes(chain[-1].read_bytes())
    stack.worker()
    stack.api()
    for name in ("link.vhd", "null.vhd", "missing.vhd", "child.avhd"):
        job_id = submit(stack, {"type": "convert", "path": name,
                                "options": {"output": f"{name}.out.vhd"}})
        job = wait_state(stack, job_id, "failed")
        assert job["error"]["type"] == "path_refused", job
        assert not (stack.root / f"{name}.out.vhd").exists()
    status, problem, _ = http("POST", f"{stack.url}/v1/jobs", {
        "type": "convert", "host": "h1", "root": "vms", "path": "../outside/base.vhd",
        "options": {"output": "x.vhd"}})
    assert status == 422
    status, problem, _ = http("POST", f"{stack.url}/v1/jobs", {
        "type": "convert", "host": "h1", "root": "other", "path": "link.vhd",
        "options": {"output": "x.vhd"}})
    assert status == 422 and problem["type"].endswith("unknown_root")


@pytest.mark.slow
def test_kill_9_mid_job_then_restart_resumes_bit_identical(stack):
    chain, ref, worker, job_id = running_merge(stack, 30)
    worker.kill9()
    at_kill = stored_checkpoint(stack, job_id)
    assert get(stack, job_id)["state"] == "running"    # nobody knows yet
    stack.worker()
    job = wait_state(stack, job_id, "succeeded")
    assert file_sha256(chain[-2]) == ref.sha256
    assert job["attempts"] == 2
    assert_at_most_one_chunk_redone(job, ref)
    evs = events(stack, job_id)
    assert any(e["type"] == "reaped" for e in evs)
    resumed = next(e for e in evs if e["type"] == "resumed")
    # The restart continued from the last checkpoint the killed run made: the one it
    # reported, or (killed in between) the next one, already in the on-disk journal.
    assert position(resumed) >= position(at_kill)
    assert resumed["done"] - at_kill["done"] <= 8 << 20   # one merge unit


@pytest.mark.slow
def test_redis_restart_mid_job(stack):
    chain, ref, _worker, job_id = running_merge(stack)
    stack.server.stop()
    time.sleep(1.0)
    stack.server.start()
    job = wait_state(stack, job_id, "succeeded")
    assert file_sha256(chain[-2]) == ref.sha256
    # The heartbeat cannot renew while Redis is down: under load the 2 s lease may lapse
    # (a second attempt), and once more while the restarted Redis loads its AOF.
    assert job["attempts"] <= 3
    assert_at_most_one_chunk_redone(job, ref)


@pytest.mark.slow
def test_a_frozen_worker_is_fenced_off_and_another_finishes(stack):
    # Given a merge running on worker A, and a second worker B of the same host
    chain, ref, a, job_id = running_merge(stack)
    stack.worker()
    stack.ready("h1", 2)
    # When A freezes (SIGSTOP) past its lease, B's reaper requeues the job, and B takes it
    # with a newer fence, which it writes into the on-disk journal; A still holds the
    # journal's run lock, so B waits for it instead of running beside it
    a.freeze()
    first_fence = get(stack, job_id)["fence"]
    try:
        waiting = wait_for(lambda: (j := get(stack, job_id))["state"] == "queued"
                           and "journal is held" in (j.get("reason") or "") and j, 30,
                           what="B waiting for the frozen execution's run lock")
    finally:
        a.thaw()
    journal = chain[-2].with_name(chain[-2].name + ".vhdmend.json")
    assert waiting["fence"] > first_fence
    # Then A, thawed, is refused by the fence (or its lost lease) and stops without
    # touching the job; B resumes and finishes, bit-identical to an uninterrupted run
    job = wait_state(stack, job_id, "succeeded")
    assert file_sha256(chain[-2]) == ref.sha256
    assert not journal.exists() and not chain[-1].exists()
    assert_at_most_one_chunk_redone(job, ref)
    log = (stack.tmp / "worker-h1.log").read_text(errors="replace")
    assert "lost the job" in log, log[-3000:]
    states = [e.get("to") for e in events(stack, job_id) if e["type"] == "state"]
    assert "failed" not in states and job["fence"] > waiting["fence"]
