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


def test_a_single_worker_reaps_the_job_its_dead_predecessor_held(tmp_path) -> None:
    # Given the only worker of h1 killed mid-job (its lease gone, its record left behind),
    # and its replacement's housekeeping: no other worker exists to reap for it
    import time

    from service import hosts
    from service.config import load
    from workers.housekeeping import Housekeeping
    store = _store()
    settings = load({}, host="h1", roots={"vms": str(tmp_path)}, tick_seconds=0.05)
    hosts.register(store, "h1", "w_dead", {"vms": str(tmp_path)}, ttl=0.01, queue="q")
    first, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    store.claim(first.id, "dead", 5, "w_dead", 5)
    store.r.delete(store.k_lease(first.id))
    sent: list[str] = []
    keeper = Housekeeping(store, settings, lambda j, h: sent.append(j))
    # When it ticks, it reaps at once (its own turn), and again on later ticks
    keeper.tick()
    assert store.get(first.id).state == "queued" and sent == [first.id]
    second, _ = store.create(new_job("merge", "h1", "vms", "b.avhd"))
    store.claim(second.id, "dead2", 5, "w_dead", 5)
    store.r.delete(store.k_lease(second.id))
    time.sleep(0.06)                                    # the reaper's turn lasts < 1 tick
    keeper.tick()
    assert store.get(second.id).state == "queued" and second.id in sent
    # And h1 is live through the new worker, the dead one stale
    states = {w["worker"]: w["stale"] for w in hosts.all_workers(store)}
    assert states[keeper.worker] is False and states["w_dead"] is True
