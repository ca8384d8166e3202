"""Lock (real Redis), fencing of a stolen lease, path confinement, webhook signatures."""

from __future__ import annotations

import base64
import os
import threading
import uuid
from pathlib import Path

import pytest

from service import paths
from service.chains import redis_chain_lock as ChainLock
from service.config import load
from service.errors import PathRefused, UnknownRoot
from service.job import new_job
from service.store import RedisJobStore as JobStore
from tests.workers.conftest import CHUNK, RATE, make_chain, wait_for
from vhdlib import journal as vjournal
from workers import webhooks


@pytest.fixture
def r(redis_server):
    return redis_server.client()


def test_lock_is_token_owned_fenced_and_compare_and_delete(r):
    ident = uuid.uuid4().hex
    a = ChainLock(r, ident, lease_seconds=5)
    held = a.acquire("job-a")
    assert held is not None and held.fence == 1 and a.holder() == "job-a"
    assert a.acquire("job-b") is None                  # held
    assert a.renew(held) and a.still_current(held)
    r.delete(a.key)                                    # the lease lapses...
    b = ChainLock(r, ident, lease_seconds=5)
    held_b = b.acquire("job-b")                        # ...and another takes over
    assert held_b is not None and held_b.fence == 2
    assert not a.renew(held) and not a.still_current(held)
    assert not a.release(held)                         # never frees another's lock
    assert b.holder() == "job-b" and b.release(held_b) and b.holder() is None


def test_a_stolen_lease_is_caught_by_the_fence(redis_server, tmp_path):
    # Given a merge of a real chain running in-process, paced to last a few seconds
    from workers.tasks import JobRun
    root = tmp_path / "root"
    chain = make_chain(root / "vm1")
    prefix = f"f{uuid.uuid4().hex[:6]}"
    settings = load({}, redis_url=redis_server.url, prefix=prefix, roots={"vms": str(root)},
                    chunk_bytes=CHUNK, max_rate=RATE, lease_seconds=30, progress_interval=0.0)
    store = JobStore(redis_server.client(), prefix=prefix)
    job, _ = store.create(new_job("merge", "h1", "vms", f"vm1/{chain[-1].name}"))
    run = JobRun(job.id, store, settings)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(run.run()))
    thread.start()
    wait_for(lambda: (store.get(job.id).progress or {}).get("percent", 0) > 20, 20)
    # When its chain lock lapses and a second executor takes it (fence + 1) and records
    # its fence in the journal, as a worker taking over does before resuming
    current = store.get(job.id)
    lock = ChainLock(redis_server.client(), current.lock_key or "", prefix=prefix)
    redis_server.client().delete(lock.key)
    thief = lock.acquire("thief")
    assert thief is not None and thief.fence == (current.fence or 0) + 1
    assert current.checkpoint is not None and current.checkpoint.journal
    vjournal.set_fence(Path(current.checkpoint.journal), thief.fence)
    thread.join(30)
    # Then the first executor stops at its next checkpoint: it lost the job, which is not a
    # job failure; nothing was retired and the journal keeps the thief's fence
    assert outcome == ["fenced"], outcome
    after = store.get(job.id)
    assert after.state == "running" and after.error is None
    assert all(p.exists() for p in chain)
    journal = chain[-2].with_name(chain[-2].name + ".vhdmend.json")
    assert vjournal.load(str(journal))["fence"] == thief.fence


@pytest.fixture
def root(tmp_path):
    rt = tmp_path / "root"
    (rt / "sub").mkdir(parents=True)
    (rt / "sub" / "disk.vhd").write_bytes(b"x")
    (tmp_path / "secret.vhd").write_bytes(b"s")
    (rt / "out-link.vhd").symlink_to(tmp_path / "secret.vhd")
    (rt / "in-link.vhd").symlink_to(rt / "sub" / "disk.vhd")
    (rt / "dir-link").symlink_to(tmp_path)
    (rt / "dev.vhd").symlink_to("/dev/zero")
    return {"vms": str(rt)}


@pytest.mark.parametrize("rel,ok", [
    ("sub/disk.vhd", True), ("in-link.vhd", True), ("./sub/disk.vhd", True),
    ("../secret.vhd", False), ("sub/../../secret.vhd", False), ("/etc/passwd", False),
    ("out-link.vhd", False), ("dir-link/secret.vhd", False), ("dev.vhd", False),
    ("sub", False), ("", False), ("a\x00b", False), ("missing.vhd", False),
    ("C:\\x.vhd", False), ("\\\\server\\share", False),
])
def test_resolve_confines_paths(root, rel, ok):
    if ok:
        assert paths.resolve(root, "vms", rel).startswith(os.path.realpath(root["vms"]))
    else:
        with pytest.raises(PathRefused):
            paths.resolve(root, "vms", rel)


def test_outputs_may_be_new_but_stay_inside(root):
    assert paths.resolve(root, "vms", "sub/new.vhd", must_exist=False).endswith("new.vhd")
    with pytest.raises(PathRefused):
        paths.resolve(root, "vms", "nodir/new.vhd", must_exist=False)
    with pytest.raises(PathRefused):
        paths.resolve(root, "vms", "dir-link/new.vhd", must_exist=False)
    with pytest.raises(UnknownRoot):
        paths.resolve(root, "other", "sub/disk.vhd")


def test_chain_layers_outside_the_root_are_refused(root, tmp_path):
    paths.check_chain(root["vms"], [os.path.join(root["vms"], "sub", "disk.vhd")])
    with pytest.raises(PathRefused):
        paths.check_chain(root["vms"], [os.path.join(root["vms"], "sub", "disk.vhd"),
                                        str(tmp_path / "secret.vhd")])


def test_standard_webhooks_signature():
    # Vector from the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, ts = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    body = b'{"test": 2432232314}'
    assert webhooks.sign(secret, msg_id, ts, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    mac = webhooks.sign("plain-secret", "id", 1, b"{}")
    assert mac.startswith("v1,") and len(base64.b64decode(mac[3:])) == 32


@pytest.mark.parametrize("url,allowed", [
    ("http://127.0.0.1:9/x", True), ("https://tickets.example/x", True),
    ("http://evil.example/x", False), ("ftp://127.0.0.1/x", False), ("not a url", False),
])
def test_webhook_allow_list(url, allowed):
    assert webhooks.allowed(url, ("127.0.0.1", "tickets.example")) is allowed


def test_backoff_grows_with_jitter_and_is_capped():
    for attempt in range(1, 30):
        d = webhooks.backoff(attempt, 5.0)
        assert 2.5 <= d <= min(webhooks.MAX_DELAY, 5.0 * 2 ** attempt)
