"""Integration fixtures: a real redis-server, real Celery worker processes, a real HTTP API,
and vhdlib's real engine on real chains (no stub anywhere).

Jobs are made to span many checkpoints with a small chunk (``VHDMEND_CHUNK_BYTES``) on a
chain of 512 KiB blocks, and to last a few seconds with the worker's I/O rate cap
(``VHDMEND_MAX_RATE``), so a test can kill, freeze, pause or cancel them mid-way.

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
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.chains import file_sha256
from vhdlib import demo, ops

REPO = Path(__file__).resolve().parents[2]
TOKEN = "integration-token-0123456789"
#: Bytes per chunk given to the engine: a 32 MiB chain's merge spans ~30 checkpoints.
CHUNK = 64 << 10
#: The workers' I/O cap (bytes/s): such a merge lasts ~3 s.
RATE = 4 << 20
#: Explicit output ids make convert/remediate outputs reproducible byte for byte.
OUTPUT_IDS = {"uuid": "6f3c0a1e-5d2b-4c8e-9a7f-0123456789ab", "timestamp": 1700000000}


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

    def freeze(self) -> None:
        """SIGSTOP the worker and its pool (a VM pause, a GC stall): leases lapse."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

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
            os.killpg(self.proc.pid, signal.SIGCONT)      # a frozen worker cannot stop
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
            "VHDMEND_ROOTS": f"vms={self.root}", "VHDMEND_OPS_BACKEND": "vhdlib",
            "VHDMEND_CHUNK_BYTES": str(CHUNK), "VHDMEND_MAX_RATE": str(RATE),
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

    def api(self, **overrides: object) -> str:
        from werkzeug.serving import make_server

        from api import create_app
        from service.config import TokenEntry, hash_token, load
        settings = load({}, **{"redis_url": self.server.url, "prefix": self.prefix,
                               "tokens": (TokenEntry("it", hash_token(TOKEN),
                                                     frozenset({"admin"})),),
                               "plan_timeout": 20.0,
                               "webhook_allow_hosts": ("127.0.0.1", "localhost"),
                               **overrides})
        server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.http = server
        self.url = f"http://127.0.0.1:{server.server_port}"
        return self.url

    def ready(self, host: str = "h1", count: int = 1) -> None:
        """Wait until ``count`` workers of ``host`` have registered."""
        from service import hosts as registry
        from service.store import RedisJobStore
        store = RedisJobStore(self.server.client(), prefix=self.prefix)
        wait_for(lambda: sum(w["host"] == host for w in registry.workers(store))
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



# --- real chains and their uninterrupted reference runs ------------------------------------


def make_chain(folder: Path, size: int = 32 << 20) -> list[Path]:
    """The demo's bloated chain (base + 3 snapshots), 512 KiB blocks: many small extents."""
    return demo.make_bloated_chain(folder, size=size, block_size=512 << 10)


def virtual_sha(path: Path) -> str:
    """SHA-256 of the virtual content ``path`` reads as (through its parents)."""
    import hashlib

    import vhdlib
    h = hashlib.sha256()
    with vhdlib.open(str(path)) as disk:
        for off in range(0, disk.virtual_size, 4 << 20):
            h.update(disk.read(off, min(4 << 20, disk.virtual_size - off)))
    return h.hexdigest()


@dataclass(frozen=True)
class Reference:
    """What an uninterrupted in-process run produced: the target's bytes, its checkpoints."""

    sha256: str
    checkpoints: int


def reference_run(chain_dir: Path, scratch: Path, kind: str, rel: str, target: str,
                  **options: object) -> Reference:
    """Run ``kind`` on a copy of ``chain_dir`` without interruption, with the workers'
    chunk size; ``target`` (relative) is the file whose bytes the service must match."""
    copy = scratch / f"ref-{uuid.uuid4().hex[:6]}"
    shutil.copytree(chain_dir, copy)
    if options.get("output"):
        options["output"] = str(copy / str(options["output"]))
    op = ops.prepare(kind, str(copy / rel), **options)
    count = [0]
    op.run(on_checkpoint=lambda _state: count.__setitem__(0, count[0] + 1), chunk_bytes=CHUNK)
    return Reference(file_sha256(copy / target), count[0])
