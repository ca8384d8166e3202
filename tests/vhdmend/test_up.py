"""``vhdmend up`` supervising real processes (issue 8 D8): its own redis-server on a free
port, a real Celery worker and the API over real HTTP. ``kill -9`` of the worker's main
process mid-job: the supervisor restarts it, the job resumes from its journal and ends
bit-identical; ``kill -9`` of the API: it comes back; SIGTERM stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chains import file_sha256
from tests.workers.conftest import (
    CHUNK,
    RATE,
    REPO,
    TOKEN,
    check_redis,
    free_port,
    http,
    make_chain,
    reference_run,
    wait_for,
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                     # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live processes of the process group ``pgid`` (zombies excluded)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


class Up:
    """A ``vhdmend up`` process and what it wrote to its state dir."""

    def __init__(self, tmp: Path) -> None:
        self.root, self.state = tmp / "root", tmp / "state"
        self.root.mkdir()
        self.state.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = tmp / "up.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VHDMEND_")}
        env.update({"PYTHONPATH": str(REPO), "VHDMEND_API_TOKEN": TOKEN,
                    "VHDMEND_OPS_BACKEND": "vhdlib", "VHDMEND_CHUNK_BYTES": str(CHUNK),
                    "VHDMEND_MAX_RATE": str(RATE), "VHDMEND_LEASE_SECONDS": "2",
                    "VHDMEND_TICK_SECONDS": "0.5", "VHDMEND_PROGRESS_INTERVAL": "0.05"})
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vhdmend", "up", "--root", f"vms={self.root}",
                 "--state-dir", str(self.state), "--port", str(self.port),
                 "--host-name", "h1", "--restart-delay", "0.5"],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.seen: set[int] = set()

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.state / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        self.seen.add(pid)
        return pid

    def hosts(self) -> list[dict]:
        status, body, _ = http("GET", f"{self.url}/v1/hosts")
        return body["items"] if status == 200 else []

    def live_workers(self) -> set[str]:
        return {w["worker"] for h in self.hosts() if h["host"] == "h1" and h["state"] == "live"
                for w in h["workers"]}

    def logs(self) -> str:
        text = [self.output()]
        for name in ("worker.log", "api.log"):
            path = self.state / name
            if path.exists():
                text.append(f"--- {name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(text)

    def close(self) -> None:
        """Stop it whatever happened; kill any child it left (the test then fails)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.seen:
            for member in group_members(pid):
                os.kill(member, signal.SIGKILL)


@pytest.fixture
def up(tmp_path):
    check_redis()
    u = Up(tmp_path)
    try:
        yield u
    finally:
        u.close()


def job(up: Up, job_id: str) -> dict:
    return http("GET", f"{up.url}/v1/jobs/{job_id}")[1]


@pytest.mark.slow
def test_up_restarts_a_killed_worker_and_api_and_the_job_resumes_bit_identical(up, tmp_path):
    chain = make_chain(up.root / "vm1")
    ref = reference_run(up.root / "vm1", tmp_path, "merge", chain[-1].name, chain[-2].name)
    wait_for(lambda: "vhdmend is up" in up.output(), 60, what="vhdmend up")
    first = wait_for(lambda: up.live_workers(), 60, what="the worker registered")
    status, created, _ = http("POST", f"{up.url}/v1/jobs", {
        "type": "merge", "host": "h1", "root": "vms", "path": f"vm1/{chain[-1].name}"})
    assert status == 202, created
    job_id = created["id"]
    try:
        wait_for(lambda: (job(up, job_id).get("progress") or {}).get("percent", 0) >= 20,
                 60, what="the merge at 20 %")

        # kill -9 of the Celery main process (its pool child dies with it)
        old = up.pid("worker")
        assert old is not None and alive(old)
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = wait_for(lambda: (p := up.pid("worker")) not in (None, old) and alive(p) and p,
                       30, what="the worker restarted")
        restarted_after = time.monotonic() - killed_at
        assert group_members(old) == []          # no orphan of the dead worker is left
        assert f"worker (pid {old}) killed by SIGKILL" in up.output()
        wait_for(lambda: up.live_workers() - first, 60, what="the new worker registered")
        resumed = wait_for(lambda: next((e for e in http(
            "GET", f"{up.url}/v1/jobs/{job_id}/events")[1]["items"]
            if e["type"] == "resumed"), None), 120, interval=0.1, what="the job resumed")
        resumed_after = time.monotonic() - killed_at

        done = wait_for(lambda: (j := job(up, job_id))["state"] in
                        ("succeeded", "failed", "cancelled") and j, 120, what="the job ended")
        assert done["state"] == "succeeded", done
        assert file_sha256(chain[-2]) == ref.sha256
        assert done["attempts"] == 2
        evs = http("GET", f"{up.url}/v1/jobs/{job_id}/events")[1]["items"]
        assert any(e["type"] == "reaped" for e in evs), evs
        assert resumed["done"] > 0               # from the journal, not from the start
        print(f"\nkill -9 of the worker: restarted after {restarted_after:.2f} s, the job "
              f"resumed after {resumed_after:.2f} s (lease 2 s), pid {old} -> {new}")

        # kill -9 of the API process: it comes back on the same port
        api = up.pid("api")
        assert api is not None
        killed_at = time.monotonic()
        os.kill(api, signal.SIGKILL)
        wait_for(lambda: (p := up.pid("api")) not in (None, api) and alive(p), 30,
                 what="the API restarted")
        wait_for(lambda: _reachable(up) and http("GET", f"{up.url}/healthz")[0] == 200, 60,
                 what="the API answering again")
        print(f"API answering {time.monotonic() - killed_at:.2f} s after kill -9")
        assert job(up, job_id)["state"] == "succeeded"
    except BaseException:
        print(up.logs())
        raise

    # SIGTERM: everything stops, exit 0, no child or grandchild left, PID files gone
    children = [p for p in (up.pid("redis"), up.pid("worker"), up.pid("api")) if p]
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(40) == 0, up.logs()
    assert not any(alive(p) for p in children)
    assert not any(group_members(p) for p in up.seen)
    assert not list(up.state.glob("*.pid"))


def _reachable(up: Up) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", up.port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_frozen_worker_shows_its_host_stale_then_live_again(up):
    wait_for(lambda: "vhdmend is up" in up.output(), 60, what="vhdmend up")
    wait_for(lambda: up.live_workers(), 60, what="the worker registered")
    worker = up.pid("worker")
    assert worker is not None
    os.kill(worker, signal.SIGSTOP)          # alive (not restarted) but not heartbeating
    try:
        # The window is 3 ticks + 5 s (6.5 s here)
        stale = wait_for(lambda: next((h for h in up.hosts() if h["host"] == "h1"
                                       and h["state"] == "stale"), None), 30,
                         what="h1 stale")
        assert stale["seconds_since_heartbeat"] >= 6.5
        assert [w["state"] for w in stale["workers"]] == ["stale"]
        assert up.pid("worker") == worker    # a frozen process is not restarted
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_for(lambda: up.live_workers(), 30, what="h1 live again")
