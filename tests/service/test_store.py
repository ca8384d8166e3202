"""The job store's contract, on the in-memory stub and on Redis (fakeredis) alike."""

from __future__ import annotations

import time

import fakeredis
import pytest

from service.errors import Conflict, IdempotencyMismatch, LostLease, NotFound
from service.job import Position, new_job
from service.store import JobStore, RedisJobStore, StubJobStore


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["stub", "redis"])
def store(request) -> JobStore:
    if request.param == "stub":
        return StubJobStore()
    return RedisJobStore(fakeredis.FakeRedis(), prefix="t")


def test_create_get_and_idempotency(store: JobStore) -> None:
    job, created = store.create(new_job("merge", "h1", "vms", "a.avhd"),
                                idempotency=("me:k1", "fp1"))
    assert created and store.get(job.id) == job
    again, created = store.create(new_job("merge", "h1", "vms", "a.avhd"),
                                  idempotency=("me:k1", "fp1"))
    assert not created and again.id == job.id
    with pytest.raises(IdempotencyMismatch):
        store.create(new_job("merge", "h1", "vms", "b.avhd"), idempotency=("me:k1", "fp2"))
    with pytest.raises(NotFound):
        store.get("01J00000000000000000000000")


def test_transitions_are_guarded_by_state_token_and_table(store: JobStore) -> None:
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    with pytest.raises(Conflict):
        store.transition(job.id, ["running"], "pausing")     # not in an allowed state
    with pytest.raises(Conflict):
        store.transition(job.id, None, "pausing")            # queued -> pausing: no such move
    running = store.transition(job.id, ["queued"], "running", set_fields={"lease_token": "t1"})
    assert running.state == "running" and running.lease_token == "t1"
    with pytest.raises(LostLease):
        store.transition(job.id, None, None, token="other", set_fields={"phase": "copy"})
    done = store.transition(job.id, None, "succeeded", token="t1", delete=["lease_token"])
    assert done.finished_at and done.lease_token is None
    with pytest.raises(Conflict):
        store.transition(job.id, None, "queued")             # finished for good
    assert [e["to"] for e in store.events(job.id) if e["type"] == "state"] == [
        "queued", "running", "succeeded"]
    assert store.counts()["succeeded"] == 1


def test_the_position_round_trips_typed(store: JobStore) -> None:
    job, _ = store.create(new_job("convert", "h1", "vms", "a.vhd"))
    at = Position("/r/a.vhd.vhdmend.json", "copy", 3 << 20, 5 << 20, 7)
    store.transition(job.id, None, None, set_fields={"checkpoint": at})
    assert store.get(job.id).checkpoint == at
    assert store.get(job.id).to_public()["checkpoint"] is True


def test_claim_outcomes(store: JobStore) -> None:
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    outcome, claimed = store.claim(job.id, "t1", 30, "w1", 5)
    assert outcome == "claimed" and claimed is not None and claimed.state == "running"
    assert claimed.attempts == 1 and store.lease_alive(job.id)
    assert store.claim(job.id, "t2", 30, "w2", 5)[0] == "busy"
    assert store.renew_lease(job.id, "t1", 30) and not store.renew_lease(job.id, "t2", 30)
    store.release_lease(job.id, "t2")                         # not ours: kept
    assert store.lease_alive(job.id)
    store.release_lease(job.id, "t1")
    assert not store.lease_alive(job.id)
    store.transition(job.id, None, "pausing")
    store.transition(job.id, None, "paused")
    assert store.claim(job.id, "t3", 30, "w3", 5)[0] == "skip"
    assert not store.lease_alive(job.id)
    assert store.claim("01J00000000000000000000000", "t", 30, "w", 5) == ("skip", None)


def test_too_many_attempts_fail_the_job(store: JobStore) -> None:
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    store.transition(job.id, None, None, set_fields={"attempts": 5})
    outcome, failed = store.claim(job.id, "t1", 30, "w1", 5)
    assert outcome == "exhausted" and failed is not None and failed.state == "failed"
    assert not store.lease_alive(job.id)


def test_find_pages_newest_first(store: JobStore) -> None:
    ids = [store.create(new_job("merge", f"h{i % 2}", "vms", f"{i}.avhd"))[0].id
           for i in range(7)]
    page, token = store.find(host="h0", limit=2)
    assert [j.id for j in page] == [ids[6], ids[4]] and token
    rest, token = store.find(host="h0", limit=2, page_token=token)
    assert [j.id for j in rest] == [ids[2], ids[0]]
    assert [j.id for j in store.find(limit=10)[0]] == ids[::-1]


def test_find_by_type_pages_past_other_kinds(store: JobStore) -> None:
    # Given one merge, then more compacts than a page, then another merge
    first = store.create(new_job("merge", "h1", "vms", "a.avhd"))[0].id
    compacts = [store.create(new_job("compact", "h1", "vms", f"{i}.vhd"))[0].id
                for i in range(7)]
    last = store.create(new_job("merge", "h2", "vms", "b.avhd"))[0].id
    store.transition(last, None, "running")
    # Then the type filter reaches both merges, newest first, whatever lies between
    assert [j.id for j in store.find(type="merge", limit=5)[0]] == [last, first]
    page, token = store.find(type="compact", limit=4)
    rest, end = store.find(type="compact", limit=4, page_token=token)
    assert [j.id for j in page + rest] == compacts[::-1] and end is None
    # and combines with the other filters
    assert [j.id for j in store.find(type="merge", state="queued")[0]] == [first]
    assert [j.id for j in store.find(type="merge", host="h2")[0]] == [last]
    assert store.find(type="compact", state="running")[0] == []
    assert store.find(type="convert")[0] == []


def test_jobs_stored_before_the_type_index_are_found_by_type() -> None:
    # Given jobs written by a version without the per-type index (its keys removed)
    r = fakeredis.FakeRedis()
    old = RedisJobStore(r, prefix="t")
    ids = [old.create(new_job(kind, "h1", "vms", f"{i}.vhd"))[0].id
           for i, kind in enumerate(["merge", "compact", "merge"])]
    for key in r.keys("t:idx:type:*"):
        r.delete(key)
    purged = old.create(new_job("merge", "h1", "vms", "gone.vhd"))[0].id
    r.delete("t:idx:type:merge")
    r.delete(old.k_job(purged))  # a record gone, its id still in the all-index
    # When a new store filters by type, it indexes the stored jobs once
    new = RedisJobStore(r, prefix="t")
    assert [j.id for j in new.find(type="merge")[0]] == [ids[2], ids[0]]
    assert r.zrange("t:idx:type:merge", 0, -1) == [ids[0].encode(), ids[2].encode()]
    assert [j.id for j in new.find(type="compact", state="queued")[0]] == [ids[1]]
    assert r.exists("t:migrated:type-index")
    # and not again: a job whose index entry is missing now stays unlisted
    r.zrem("t:idx:type:compact", ids[1])
    assert RedisJobStore(r, prefix="t").find(type="compact")[0] == []


def test_webhooks_are_queued_with_the_change_and_claimed_once(store: JobStore) -> None:
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd",
                                  callback={"url": "http://x/hook", "secret": "s"}))
    store.transition(job.id, None, "running")
    due = store.due_deliveries(time.time() + 1, 10)
    assert len(due) == 2
    record = store.delivery(due[1])
    assert record is not None and record["payload"]["type"] == "job.running"
    assert "secret" not in str(record["payload"])
    assert store.take_delivery(due[1]) and not store.take_delivery(due[1])
    store.retry_delivery({**record, "attempt": 1}, time.time() + 100)
    assert due[1] not in store.due_deliveries(time.time() + 1, 10)
    store.drop_delivery(due[1])
    assert store.delivery(due[1]) is None


def test_retention_purges_only_old_finished_jobs(store: JobStore) -> None:
    old, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    new, _ = store.create(new_job("merge", "h1", "vms", "b.avhd"))
    store.transition(old.id, None, "cancelled")
    store.transition(new.id, None, "cancelled")
    assert store.purge_finished(3600, now=time.time() + 7200) == 2
    assert store.purge_finished(0) == 0
    with pytest.raises(NotFound):
        store.get(old.id)


def test_stub_leases_expire_by_its_clock() -> None:
    clock = Clock()
    store = StubJobStore(clock=clock)
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd"))
    assert store.claim(job.id, "t1", 10, "w1", 5)[0] == "claimed"
    clock.now += 11
    assert not store.lease_alive(job.id) and not store.renew_lease(job.id, "t1", 10)


def test_the_chain_lock_is_fenced_on_both_stores(store: JobStore) -> None:
    lock = store.chains.lock("chain-1", 30)
    first = lock.acquire("job-a")
    assert first is not None and lock.acquire("job-b") is None
    assert lock.holder() == "job-a" and lock.still_current(first)
    assert lock.release(first) and lock.holder() is None
    second = lock.acquire("job-b")
    assert second is not None and second.fence == first.fence + 1
    assert not lock.still_current(first) and not lock.release(first)
    store.chains.reserve("chain-1", "job-b")
    store.chains.unreserve("chain-1", "job-a")               # not the holder: kept
    assert store.chains.reserved_by("chain-1") == "job-b"
    store.chains.unreserve("chain-1", "job-b")
    assert store.chains.reserved_by("chain-1") is None
    store.chains.add_waiter("chain-1", "j2")
    store.chains.add_waiter("chain-1", "j1")
    assert store.chains.take_waiters("chain-1") == ["j1", "j2"]
    assert store.chains.take_waiters("chain-1") == []


def test_webhooks_carry_a_per_job_sequence_in_change_order(store: JobStore) -> None:
    job, _ = store.create(new_job("merge", "h1", "vms", "a.avhd",
                                  callback={"url": "http://x/hook", "secret": "s"}))
    other, _ = store.create(new_job("merge", "h1", "vms", "b.avhd",
                                    callback={"url": "http://x/hook", "secret": "s"}))
    store.transition(job.id, None, "running")
    store.transition(job.id, None, None, set_fields={"phase": "copy"}, webhook="job.progress")
    store.transition(job.id, None, "succeeded")
    store.transition(other.id, None, "running")
    records = [store.delivery(d) for d in store.due_deliveries(time.time() + 1, 20)]
    seqs: dict[str, list[tuple[int, str]]] = {}
    for r in records:
        assert r is not None
        seqs.setdefault(r["job_id"], []).append((r["payload"]["sequence"],
                                                 r["payload"]["type"]))
    assert sorted(seqs[job.id]) == [(1, "job.created"), (2, "job.running"),
                                    (3, "job.progress"), (4, "job.succeeded")]
    assert sorted(seqs[other.id]) == [(1, "job.created"), (2, "job.running")]
