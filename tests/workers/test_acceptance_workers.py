"""Acceptance checks of issue 4 through real processes that the lifecycle tests leave open:
a cancel or pause that meets a locked chain, duplicated broker messages, every transition
reaching a signed webhook, the SSE stream and /v1/hosts over real HTTP, and the client
commands ``submit``/``status``/``watch`` against a real stack."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import pytest

import vhdlib
from service.chains import redis_chain_lock as ChainLock
from service.config import load
from service.job import new_job
from service.store import RedisJobStore as JobStore
from tests.chains import file_sha256
from tests.workers.conftest import (
    CHUNK,
    RATE,
    TOKEN,
    http,
    make_chain,
    reference_run,
    wait_for,
)
from tests.workers.test_lifecycle import (
    assert_at_most_one_chunk_redone,
    events,
    get,
    merge_job,
    paused_merge,
    submit,
    wait_percent,
    wait_state,
)
from workers import webhooks

# --- a cancel or pause asked while the chain is locked by another job -------------------


@pytest.mark.parametrize("state,journal,expected", [
    ("cancelling", False, "cancelled"),   # nothing on disk: cancelled without the lock
    ("cancelling", True, "cancelling"),   # a journal to roll back: waits, still cancelling
    ("pausing", False, "paused"),
    ("running", False, "queued"),         # a plain claim waits in queued, with the reason
])
def test_a_job_meeting_a_locked_chain_keeps_a_cancel_or_pause(redis_server, tmp_path, state,
                                                              journal, expected):
    from workers.tasks import JobRun
    # Given a chain whose lock another job holds, and a merge job on it in ``state`` (a
    # paused job cancelled by the API, a job requeued by the reaper, ...)
    root = tmp_path / "root"
    chain = make_chain(root / "vm1", size=4 << 20)
    prefix = f"a{uuid.uuid4().hex[:6]}"
    settings = load({}, redis_url=redis_server.url, prefix=prefix, roots={"vms": str(root)},
                    chunk_bytes=CHUNK, lease_seconds=30)
    store = JobStore(redis_server.client(), prefix=prefix)
    with vhdlib.open(str(chain[-1])) as disk:
        identity = str(disk.base.link_id)
    other = ChainLock(redis_server.client(), identity, prefix=prefix).acquire("other-job")
    assert other is not None
    job, _ = store.create(new_job("merge", "h1", "vms", f"vm1/{chain[-1].name}"))
    checkpoint = None
    if journal:
        fake = root / "vm1" / "partial.vhdmend.json"
        fake.write_text("{}")
        checkpoint = {"journal": str(fake)}
    if state == "pausing":   # a pause reaches a job while it runs (service.states)
        store.transition(job.id, ["queued"], "running")
    store.transition(job.id, None, state, set_fields={"checkpoint": checkpoint})
    before = {p: file_sha256(p) for p in chain}
    # When a worker's execution picks the job up
    outcome = JobRun(job.id, store, settings).run()
    # Then the cancel or pause is not lost by sending the job back to queued
    after = store.get(job.id)
    assert after.state == expected, (outcome, after.state, after.reason)
    if expected != "cancelled":
        assert "chain lock" in (after.reason or "")
    assert after.lease_token is None and not store.lease_alive(job.id)
    assert {p: file_sha256(p) for p in chain} == before


# --- duplicated broker messages: one execution ------------------------------------------


def test_redelivered_messages_never_start_a_second_execution(stack):
    # Given a merge running on one of two workers of the host
    chain = make_chain(stack.root / "vm1")
    ref = reference_run(stack.root / "vm1", stack.tmp, "merge", chain[-1].name, chain[-2].name)
    stack.worker()
    stack.worker()
    stack.api()
    stack.ready("h1", 2)
    job_id = submit(stack, merge_job(chain))
    wait_percent(stack, job_id, 10)
    # When the broker delivers the job's message again, several times, while it runs (what
    # Redis does after visibility_timeout, or a reaper that nudges twice)
    from workers.celery_app import make_app, send_job
    producer = make_app(stack.server.url)
    for _ in range(4):
        send_job(job_id, "h1", celery=producer)
    # Then the free worker takes each message and does nothing: one attempt, every chunk
    # made once, the result bit-identical
    job = wait_state(stack, job_id, "succeeded")
    assert file_sha256(chain[-2]) == ref.sha256
    assert job["attempts"] == 1 and job["chunks"] == ref.checkpoints
    assert [e["type"] for e in events(stack, job_id)].count("attempt") == 1
    # the SSE stream of a finished job ends with it
    req = urllib.request.Request(f"{stack.url}/v1/jobs/{job_id}/stream?interval=0.1",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = resp.read().decode()
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert frames and frames[-1]["state"] == "succeeded"


# --- every transition reaches the ticketing system, signed ------------------------------


def test_pause_resume_cancel_each_reach_the_webhook_receiver(stack, httpserver):
    chain = make_chain(stack.root / "vm1")
    stack.worker()
    stack.api()
    secret = "whsec_" + "dGlja2V0aW5nLXN5c3RlbS1zZWNyZXQtMDEyMzQ1Ng=="
    received: list[dict] = []
    bad: list[str] = []

    def hook(request):
        from werkzeug import Response
        if not webhooks.verify(secret, dict(request.headers), request.get_data()):
            bad.append(request.headers.get("webhook-id", "?"))
        received.append(request.get_json())
        return Response("ok")
    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    job_id = submit(stack, {**merge_job(chain), "external_ref": "CHG-9",
                            "callback": {"url": httpserver.url_for("/hook"),
                                         "secret": secret}})
    wait_percent(stack, job_id, 10)
    # /v1/hosts shows the running job, the root's free bytes and a fresh heartbeat
    host = http("GET", f"{stack.url}/v1/hosts")[1]["items"][0]
    assert job_id in host["running_jobs"]
    st = os.statvfs(stack.root)
    assert abs(host["roots"]["vms"]["free_bytes"] - st.f_bavail * st.f_frsize) < 1 << 30
    assert host["last_heartbeat"].endswith("Z")
    http("POST", f"{stack.url}/v1/jobs/{job_id}/pause")
    wait_state(stack, job_id, "paused")
    http("POST", f"{stack.url}/v1/jobs/{job_id}/resume")
    wait_state(stack, job_id, "running")
    wait_percent(stack, job_id, 40)
    http("POST", f"{stack.url}/v1/jobs/{job_id}/cancel")
    wait_state(stack, job_id, "cancelled")
    # Every state the job went through arrived, in order, signed, with the ticket id
    # (the claim's state change is recorded as its "attempt" event, with from/to)
    states = [e["to"] for e in events(stack, job_id) if "to" in e]
    assert states[:3] == ["queued", "running", "pausing"] and states[-1] == "cancelled"
    wait_for(lambda: any(r["type"] == "job.cancelled" for r in received), 20,
             what="the cancelled webhook")
    got = [r["type"].removeprefix("job.") for r in received
           if r["type"] not in ("job.progress", "job.waiting")]
    assert got == ["created" if s == "queued" and i == 0 else s for i, s in enumerate(states)]
    assert not bad
    assert all(r["data"]["external_ref"] == "CHG-9" for r in received)


# --- client commands against a real stack ----------------------------------------------


def test_submit_watch_and_status_commands(stack, capsys, monkeypatch):
    from vhdmend.cli import main
    chain = make_chain(stack.root / "vm1", size=4 << 20)
    stack.worker(VHDMEND_MAX_RATE=str(RATE * 4))
    url = stack.api()
    stack.ready()
    monkeypatch.setenv("VHDMEND_API_TOKEN", TOKEN)
    rel = f"vm1/{chain[-1].name}"
    code = main(["submit", "remediate", rel, "--host", "h1", "--root", "vms", "--output",
                 "vm1/flat.vhd", "--disk-type", "fixed", "--external-ref", "INC-3",
                 "--idempotency-key", "cli-1", "--watch", "--url", url])
    out = capsys.readouterr()
    assert code == 0, out.err
    job_id = out.out.splitlines()[0]
    summary = json.loads(out.out[len(job_id) + 1:])
    assert summary["state"] == "succeeded" and summary["id"] == job_id
    assert "succeeded" in out.err                            # the watch's state lines
    assert (stack.root / "vm1" / "flat.vhd").exists()
    # the same Idempotency-Key and body: the same job, nothing new runs
    assert main(["submit", "remediate", rel, "--host", "h1", "--root", "vms", "--output",
                 "vm1/flat.vhd", "--disk-type", "fixed", "--external-ref", "INC-3",
                 "--idempotency-key", "cli-1", "--url", url]) == 0
    assert capsys.readouterr().out.strip() == job_id
    assert main(["status", job_id, "--url", url]) == 0
    assert json.loads(capsys.readouterr().out)["external_ref"] == "INC-3"
    assert main(["status", "--state", "succeeded", "--host", "h1", "--url", url]) == 0
    assert job_id in capsys.readouterr().out
    # a path escaping the root is a usage error with the field named
    assert main(["submit", "inspect", "../etc/passwd", "--host", "h1", "--root", "vms",
                 "--url", url]) == 2
    assert "path" in capsys.readouterr().err
    # a wrong token is refused
    assert main(["status", "--url", url, "--token", "wrong-token-wrong"]) == 2
    assert "401" in capsys.readouterr().err


def test_redone_chunks_bound_helper_is_strict():
    # The kill -9 test's bound: a run resumed from an older checkpoint fails it.
    from tests.workers.conftest import Reference
    ref = Reference("x", 10)
    assert_at_most_one_chunk_redone({"attempts": 2, "chunks": 10}, ref)
    with pytest.raises(AssertionError):
        assert_at_most_one_chunk_redone({"attempts": 2, "chunks": 12}, ref)


# --- compact over the service ------------------------------------------------------------


def test_compact_job_shrinks_the_base_bit_identically(stack):
    # Given a demo base with explicit zero blocks
    chain = make_chain(stack.root / "vm1")
    base = chain[0]
    before = base.stat().st_size
    content = vhdlib.open(str(base), resolve_parents=False)
    try:
        want = content.read(0, content.virtual_size)
    finally:
        content.close()
    ref = reference_run(stack.root / "vm1", stack.tmp, "compact", base.name, base.name)
    stack.worker()
    stack.api()
    # When a compact job runs on the host's worker
    job_id = submit(stack, {"type": "compact", "path": f"vm1/{base.name}"})
    job = wait_state(stack, job_id, "succeeded")
    # Then the file shrank, reads as before, and matches an uninterrupted in-process run
    assert base.stat().st_size < before
    assert file_sha256(base) == ref.sha256
    assert job["chunks"] == ref.checkpoints
    with vhdlib.open(str(base), resolve_parents=False) as disk:
        assert disk.read(0, disk.virtual_size) == want


# --- a paused job keeps its chain ------------------------------------------------------


def test_a_paused_job_keeps_its_chain_until_it_ends(stack):
    # Given a merge paused half way (its journal describes the chain's files)
    chain, ref, a, _ = paused_merge(stack)
    # When another job wants the same chain (a compact of its base)
    b = submit(stack, {"type": "compact", "path": f"vm1/{chain[0].name}"})
    # Then it waits, saying which paused job keeps the chain, and changes nothing
    waiting = wait_for(lambda: (j := get(stack, b))["state"] == "queued" and j.get("reason")
                       and j, 30, what="the compact waiting for the paused merge")
    assert a in waiting["reason"] and "paused" in waiting["reason"]
    base_before = file_sha256(chain[0])
    # And once the paused job is resumed and done, the waiting one runs
    assert http("POST", f"{stack.url}/v1/jobs/{a}/resume")[1]["state"] == "queued"
    wait_state(stack, a, "succeeded")
    assert file_sha256(chain[-2]) == ref.sha256
    wait_state(stack, b, "succeeded")
    assert file_sha256(chain[0]) != base_before  # the compact did its work afterwards
