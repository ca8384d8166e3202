"""Redis Sentinel: killing the master mid-job (real processes, loopback only).

One master, one replica and three Sentinels (:mod:`tests.workers.sentinel`), the real API
over HTTP and a real Celery worker, both configured with ``sentinel://...`` and the
master's name only. The master is SIGKILLed while a merge runs; the replica is promoted,
the API answers again, the job completes bit-identical to an uninterrupted run, in one
execution, with no chunk done twice; the broker works on the new master.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
from collections.abc import Iterator
from itertools import pairwise

import pytest

from service.chains import redis_chain_lock
from service.keys import Keys
from service.lease import RedisLease
from tests.chains import file_sha256
from tests.workers.conftest import (
    Stack,
    check_redis,
    http,
    make_chain,
    reference_run,
    wait_for,
)
from tests.workers.sentinel import MASTER_NAME, SentinelSet, until
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

#: Slower than the other integration jobs (1 MiB/s): the merge outlasts the failover.
RATE = 1 << 20
#: Longer than a failover (~2-4 s): the execution keeps its leases through it.
LEASE = 10


@pytest.fixture
def sentinels(tmp_path) -> Iterator[SentinelSet]:
    folder = tmp_path / "redis"
    folder.mkdir()
    cluster = SentinelSet(check_redis(), folder)
    try:
        yield cluster.start()
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


@pytest.fixture
def ha_stack(sentinels, tmp_path) -> Iterator[Stack]:
    stack = Stack(sentinels, tmp_path)  # type: ignore[arg-type]  # url + client(), as needed
    try:
        yield stack
    finally:
        stack.close()


class Poller(threading.Thread):
    """GET the job every 0.1 s; record each request's start, end and HTTP status."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.log: list[tuple[float, float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            start = time.monotonic()
            try:
                status = http("GET", self.url)[0]
            except (OSError, urllib.error.URLError, ValueError):
                status = 0
            self.log.append((start, time.monotonic(), status))
            self.done.wait(0.1)

    def figures(self, since: float) -> tuple[float, float, int]:
        """(longest time without an answer since ``since``, seconds spent in failed
        requests, number of failed requests)."""
        answers = [since] + [end for start, end, status in self.log
                             if status == 200 and end > since]
        gap = max((b - a for a, b in pairwise(answers)), default=float("inf"))
        failed = [(s, e) for s, e, status in self.log if status != 200 and e > since]
        return gap, sum(e - s for s, e in failed), len(failed)


@pytest.mark.slow
def test_master_killed_mid_job_the_replica_takes_over(ha_stack, sentinels):
    stack = ha_stack
    chain = make_chain(stack.root / "vm1")
    ref = reference_run(stack.root / "vm1", stack.tmp, "merge", chain[-1].name, chain[-2].name)
    stack.worker(VHDMEND_REDIS_MASTER_NAME=MASTER_NAME, VHDMEND_LEASE_SECONDS=str(LEASE),
                 VHDMEND_MAX_RATE=str(RATE))
    stack.api(redis_master_name=MASTER_NAME, lease_seconds=float(LEASE))
    stack.ready()
    job_id = submit(stack, merge_job(chain))
    wait_percent(stack, job_id, 20)
    poller = Poller(f"{stack.url}/v1/jobs/{job_id}")
    # /v1/hosts reads Redis without the store's retry: it shows the outage as 503s
    hosts = Poller(f"{stack.url}/v1/hosts")
    poller.start()
    hosts.start()
    try:
        old = sentinels.master_address()
        killed = time.monotonic()
        sentinels.kill_master()
        # Sentinel promotes the replica
        until(lambda: sentinels.master_address() == ("127.0.0.1", sentinels.replica_port),
              30, "the replica's promotion")
        promoted = time.monotonic() - killed
        assert old == ("127.0.0.1", sentinels.master_port)
        assert get(stack, job_id)["state"] == "running"
        job = wait_state(stack, job_id, "succeeded", timeout=120)
    finally:
        for p in (poller, hosts):
            p.done.set()
            p.join(15)
    gap, error_seconds, failures = poller.figures(killed)
    hosts_gap, hosts_errors, hosts_failures = hosts.figures(killed)
    print(f"\nfailover: replica promoted {promoted:.2f} s after the kill; GET job went "
          f"{gap:.2f} s without an answer ({failures} failed polls, {error_seconds:.2f} s "
          f"in them); GET /v1/hosts {hosts_gap:.2f} s ({hosts_failures} failed polls, "
          f"{hosts_errors:.2f} s in them); chunks {job['chunks']} of {ref.checkpoints}, "
          f"attempts {job['attempts']}")
    assert {status for _, _, status in hosts.log} <= {200, 503}, hosts.log   # never a 500
    assert hosts_gap < 15, hosts.log
    # The API answered again within seconds (one down-after period, the election, the
    # store's reconnection), and the job finished bit-identical to an uninterrupted run
    assert gap < 15, poller.log
    assert file_sha256(chain[-2]) == ref.sha256
    assert not chain[-1].exists()
    # One execution: claimed once, never reaped or resumed, no chunk done twice
    evs = events(stack, job_id)
    assert [e["type"] for e in evs].count("attempt") == 1, evs
    assert not [e for e in evs if e["type"] in ("reaped", "resumed")], evs
    assert job["attempts"] == 1
    assert_at_most_one_chunk_redone(job, ref)
    assert job["chunks"] == ref.checkpoints
    # Every change of state, in order (the claim's is its "attempt" event)
    assert [e["to"] for e in evs if "to" in e] == ["queued", "running", "succeeded"], evs
    assert {e["fence"] for e in evs if e["type"] == "irreversible"} == {job["fence"]}
    # The broker followed too: a new job goes API -> Celery -> worker on the new master
    other = submit(stack, {"type": "inspect", "path": f"vm1/{chain[0].name}"})
    assert wait_state(stack, other, "succeeded", timeout=60)["result"]
    # Its claim waited for a replica (WAIT 1) and found none: the promoted master has no
    # replica until the old one returns, which the worker says
    log = (stack.tmp / "worker-h1.log").read_text(errors="replace")
    assert "no replica acknowledged it" in log, log[-3000:]


def test_lease_scripts_survive_an_empty_script_cache(redis_server):
    # A promoted replica may not have our scripts cached: EVALSHA answers NOSCRIPT, and
    # redis-py's Script loads the script and runs it again.
    r = redis_server.client()
    lease = RedisLease(r, "t-noscript:lease")
    assert lease.acquire("tok", 5)
    r.script_flush()
    assert lease.renew("tok", 5)
    r.script_flush()
    lock = redis_chain_lock(r, "chain-noscript", prefix="t-noscript")
    held = lock.acquire("job")
    assert held is not None
    r.script_flush()
    assert lock.renew(held)
    r.script_flush()
    raised = lock.raise_fence(held, held.fence + 4)
    assert raised is not None and raised.fence == held.fence + 5
    r.script_flush()
    assert lock.still_current(raised) and lock.release(raised)
    assert lease.release("tok")


@pytest.mark.slow
def test_the_store_follows_a_failover_on_the_same_client(sentinels):
    # A client connected to the master before a failover reconnects to the new one.
    from service.config import load
    from service.store import RedisJobStore, redis_client
    settings = load({}, redis_url=sentinels.url, redis_master_name=MASTER_NAME)
    store = RedisJobStore(redis_client(settings), prefix="t-ha", retry_seconds=30.0)
    assert store.take_turn("before", 60)
    assert store.replicate() == 1              # WAIT 1: the replica has it
    sentinels.kill_master()
    # The next call fails over inside the store's retry: the same client, a new master
    wait_for(lambda: store.take_turn("after", 60), 30, what="a write on the new master")
    assert sentinels.master_address() == ("127.0.0.1", sentinels.replica_port)
    assert not store.take_turn("before", 60)     # replicated before the kill
    # No replica is left: the wait ends after its timeout, and says none acknowledged
    assert store.replicate() == 0


@pytest.mark.slow
def test_a_fence_counter_behind_the_journal_is_raised_above_it(stack):
    # Given a paused job whose journal records fence F, and a Redis that lost the fence
    # counter (increments not replicated before a failover, or a restore from an old backup)
    chain, ref, job_id, paused = paused_merge(stack)
    journal = chain[-2].with_name(chain[-2].name + ".vhdmend.json")
    on_disk = json.loads(journal.read_text())["fence"]
    assert on_disk == paused["fence"]
    stack.server.client().delete(Keys(stack.prefix).fence(paused["lock_key"]))
    # When it resumes, the new execution's fence is lifted above the journal's (a fence
    # equal to it would not fence the paused run's journal off), and the job completes
    assert http("POST", f"{stack.url}/v1/jobs/{job_id}/resume")[1]["state"] == "queued"
    job = wait_state(stack, job_id, "succeeded")
    resumed = next(e for e in events(stack, job_id) if e["type"] == "resumed")
    assert resumed["fence"] == on_disk + 1 == job["fence"]
    assert file_sha256(chain[-2]) == ref.sha256
    assert job["chunks"] == ref.checkpoints
