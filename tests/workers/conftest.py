"""Integration fixtures: a real redis-server, real Celery worker processes, a real HTTP API.

Like dramatiq's ``check_redis``: without ``redis-server`` these tests skip locally but
fail in CI (``CI=true``). Every process started here is stopped by its fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
TOKEN = "integration-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_redis() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI but not installed")
        pytest.skip("redis-server not installed")
    return exe


class RedisServer:
    """A redis-server with AOF in a temp dir, restartable on the same port and data."""

    def __init__(self, exe: str, folder: Path) -> None:
        self.exe, self.folder, self.port = exe, folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(check_redis(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class Worker:
    """A real ``celery -A workers.celery_app worker`` process for one host."""

    def __init__(self, env: dict[str, str], host: str, log: Path) -> None:
        self.env, self.host, self.log = env, host, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
                 f"vhdmend.{self.host}", "--pool=prefork", "--concurrency=1",
                 "--without-mingle", "--without-gossip", "--loglevel=info",
                 "-n", f"{self.host}-{uuid.uuid4().hex[:6]}@%h"],
                env=self.env, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    def kill9(self) -> None:
        """SIGKILL the worker and its pool processes at once (a crash, no cleanup)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass
        self.proc = None


class Stack:
    """Redis + API + workers for one test, on a fresh prefix and fresh host names."""

    def __init__(self, server: RedisServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.root = tmp / "root"
        self.root.mkdir()
        self.workers: list[Worker] = []
        self.http: object | None = None
        self.url = ""

    def env(self, host: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VHDMEND_")}
        env.update({
            "PYTHONPATH": str(REPO), "VHDMEND_REDIS_URL": self.server.url,
            "VHDMEND_PREFIX": self.prefix, "VHDMEND_HOST": host,
            "VHDMEND_ROOTS": f"vms={self.root}", "VHDMEND_OPS_BACKEND": "stub",
            "VHDMEND_STUB_DELAY": "0.1", "VHDMEND_CHUNK_BYTES": str(256 << 10),
            "VHDMEND_LEASE_SECONDS": "2", "VHDMEND_TICK_SECONDS": "0.5",
            "VHDMEND_PROGRESS_INTERVAL": "0.05",
            "VHDMEND_WEBHOOK_ALLOW_HOSTS": "127.0.0.1,localhost",
            "VHDMEND_WEBHOOK_BACKOFF_BASE": "0.2", "VHDMEND_REDIS_RETRY_SECONDS": "30",
            "VHDMEND_WEBHOOK_PROGRESS_STEP": "50"})
        env.update(extra)
        return env

    def worker(self, host: str = "h1", **extra: str) -> Worker:
        w = Worker(self.env(host, **extra), host, self.tmp / f"worker-{host}.log")
        self.workers.append(w)
        return w.start()

    def api(self) -> str:
        from werkzeug.serving import make_server

        from api import create_app
        from workers.config import TokenEntry, hash_token, load
        settings = load({}, redis_url=self.server.url, prefix=self.prefix,
                        tokens=(TokenEntry("it", hash_token(TOKEN), frozenset({"admin"})),),
                        plan_timeout=20.0)
        server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.http = server
        self.url = f"http://127.0.0.1:{server.server_port}"
        return self.url

    def ready(self, host: str = "h1", count: int = 1) -> None:
        """Wait until ``count`` workers of ``host`` have registered."""
        from workers import registry
        client = self.server.client()
        wait_for(lambda: sum(w["host"] == host for w in registry.workers(client, self.prefix))
                 >= count, 30, what=f"{count} worker(s) of {host}")

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        if self.http is not None:
            self.http.shutdown()  # type: ignore[attr-defined]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in self.tmp.glob("worker-*.log"))


@pytest.fixture
def stack(redis_server, tmp_path) -> Iterator[Stack]:
    s = Stack(redis_server, tmp_path)
    yield s
    s.close()


# --- HTTP helpers ------------------------------------------------------------------------


def http(method: str, url: str, body=None, headers=None):
    import json
    import urllib.error
    import urllib.request
    hdrs = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


def wait_for(fn, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def random_file(path: Path, size: int, seed: int = 1) -> bytes:
    import random
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data
