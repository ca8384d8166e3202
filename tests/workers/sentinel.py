"""A real Redis Sentinel set on loopback: one master, one replica (``--replicaof``) and
three Sentinels (``redis-server --sentinel``, quorum 2), each on a free port with its data
and configuration in a temporary folder. Fast failure detection (``down-after-milliseconds``
1000) so a test can kill the master and watch the replica being promoted.

Every process is started in its own process group and stopped by :meth:`SentinelSet.stop`,
which the fixture calls even when the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.sentinel import Sentinel

from tests.workers.conftest import free_port

MASTER_NAME = "vhdmend"


class SentinelSet:
    """Master + replica + 3 Sentinels; :attr:`url` is the service's ``sentinel://`` URL."""

    def __init__(self, exe: str, folder: Path, *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        self.exe, self.folder = exe, folder
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - closed with the child
        try:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        finally:
            log.close()

    def _server(self, name: str, port: int, *extra: str) -> None:
        data = self.folder / name
        data.mkdir(exist_ok=True)
        # No diskless-sync delay: the default waits 5 s for more replicas to batch a full
        # sync with; there is one, and every setup waited out the delay for its link.
        self._spawn(name, [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                           str(data), "--appendonly", "yes", "--save", "",
                           "--repl-diskless-sync-delay", "0", *extra])

    def start(self) -> SentinelSet:
        self._server("master", self.master_port)
        wait_ping(self.master_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1",
                     str(self.master_port))
        wait_ping(self.replica_port)
        until(lambda: redis.Redis(port=self.replica_port).info("replication")
              .get("master_link_status") == "up", 15, "the replica's link to the master")
        for i, port in enumerate(self.sentinel_ports):
            conf = self.folder / f"sentinel-{i}.conf"   # Sentinel rewrites it: writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            self._spawn(f"sentinel-{i}", [self.exe, str(conf), "--sentinel"])
        for port in self.sentinel_ports:
            wait_ping(port)
        # Ready when every Sentinel knows the replica and the two other Sentinels (learnt
        # from the master's INFO and the hello channel, a few seconds after start).
        for port in self.sentinel_ports:
            until(lambda p=port: self._knows_all(p), 30, f"sentinel {port} discovering")
        return self

    def _knows_all(self, port: int) -> bool:
        state = redis.Redis(port=port).sentinel_master(MASTER_NAME)
        return int(state["num-slaves"]) >= 1 and int(state["num-other-sentinels"]) >= 2

    def master_address(self) -> tuple[str, int]:
        """Where the Sentinels say the master is now."""
        return Sentinel([("127.0.0.1", p) for p in self.sentinel_ports],
                        socket_timeout=1).discover_master(MASTER_NAME)

    def client(self) -> redis.Redis:
        """A client of the current master (through the Sentinels, as the service has)."""
        return Sentinel([("127.0.0.1", p) for p in self.sentinel_ports],
                        socket_timeout=2).master_for(MASTER_NAME, socket_timeout=5)

    def kill_master(self) -> None:
        """SIGKILL the master: no shutdown, no last write, no goodbye to the replica."""
        proc = self.procs.pop("master")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-2000:]
                         for p in sorted(self.folder.glob("*.log")))


def wait_ping(port: int, timeout: float = 10.0) -> None:
    until(lambda: _pings(port), timeout, f"redis on port {port}")


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.ConnectionError:
        return False


def until(fn, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except redis.ConnectionError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
