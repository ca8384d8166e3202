"""The reaper (fakeredis): dead executions are requeued with an event; a cancelling job
waiting for its chain is only nudged, without an event per sweep."""

from __future__ import annotations

import fakeredis

from service.job import new_job
from service.store import RedisJobStore as JobStore
from workers.reaper import reap


def _store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), prefix="t")


def test_a_dead_execution_is_requeued_once_with_an_event() -> None:
    store = _store()
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    outcome, _ = store.claim(job.id, "tok", 0.001, "w1", 5)   # lease expires at once
    assert outcome == "claimed"
    store.r.delete(store.k_lease(job.id))
    sent: list[tuple[str, str]] = []
    assert reap(store, lambda j, h: sent.append((j, h))) == [job.id]
    assert store.get(job.id).state == "queued" and sent == [(job.id, "h1")]
    assert [e["type"] for e in store.events(job.id)].count("reaped") == 1


def test_a_cancelling_job_waiting_for_its_chain_gets_no_event_per_sweep() -> None:
    store = _store()
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    store.transition(job.id, None, "cancelling")                # no execution: no lease token
    sent: list[str] = []
    for _ in range(5):
        reap(store, lambda j, h: sent.append(j))
    assert store.get(job.id).state == "cancelling"
    assert sent == [job.id] * 5                                  # nudged every sweep
    assert [e["type"] for e in store.events(job.id)].count("reaped") == 0
