"""Service benchmark: status polls/s and p99 with 10,000 jobs stored (gunicorn, load from a
second process), Redis memory per job, progress-reporting overhead as a share of I/O time.

    python bench/service/run.py [--jobs 10000] [--seconds 10] [--clients 8]

Starts its own redis-server and gunicorn on free loopback ports and stops them at the end.
Targets: >= 1000 polls/s on 2 cores, p99 < 20 ms, overhead < 1 %.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
TOKEN = "bench-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def family(pid: int) -> list[int]:
    """``pid`` and its children (gunicorn's master and its workers)."""
    out = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def poller(port: int, ids: list[str], seconds: float, threads: int, out: mp.Queue) -> None:
    """A load process: ``threads`` keep-alive clients polling random jobs."""
    import threading
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    cpu0 = time.process_time()

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            conn.request("GET", f"/v1/jobs/{random.choice(ids)}", headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, time.process_time() - cpu0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--gunicorn-workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4, help="gthread threads per worker")
    args = ap.parse_args()
    import redis

    from service.config import hash_token
    from service.job import new_job
    from service.store import RedisJobStore as JobStore

    tmp = tempfile.mkdtemp(prefix="vhdmend-bench-")
    rport, aport = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(rport), "--bind",
             "127.0.0.1", "--dir", tmp, "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL))
        r = redis.Redis(port=rport)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        store = JobStore(r, prefix="bench")
        before = int(r.info("memory")["used_memory"])
        ids = []
        for i in range(args.jobs):
            job = new_job("remediate", f"fs{i % 20:02d}", "vms", f"vm{i}/disk_{i}.avhdx",
                          options={"output": f"vm{i}/flat.vhdx", "type": "fixed"},
                          external_ref=f"INC-{i}", requested_by="bench")
            store.create(job)
            store.transition(job.id, None, None, set_fields={
                "progress": {"done": 123456789, "total": 987654321, "percent": 12.5,
                             "rate": 250e6, "eta_seconds": 3.5, "phase_done": 1,
                             "phase_total": 2}, "phase": "copy"})
            ids.append(job.id)
        per_job = (int(r.info("memory")["used_memory"]) - before) / args.jobs
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "VHDMEND_REDIS_URL": f"redis://127.0.0.1:{rport}/0", "VHDMEND_PREFIX": "bench",
               "VHDMEND_TOKENS": f"bench:{hash_token(TOKEN)}:jobs:read"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{aport}", "--workers",
             str(args.gunicorn_workers), "--threads", str(args.threads), "--worker-class",
             "gthread", "--log-level", "warning", "api:create_app()"], env=env, cwd=REPO))
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", aport), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(1.0)
        q: mp.Queue = mp.Queue()
        load = mp.Process(target=poller, args=(aport, ids, args.seconds, args.clients, q))
        api_pids, redis_pids = family(procs[1].pid), [procs[0].pid]
        api_cpu0, redis_cpu0 = cpu_seconds(api_pids), cpu_seconds(redis_pids)
        t0 = time.monotonic()
        load.start()
        lat, client_cpu = q.get()
        lat.sort()
        api_cpu = cpu_seconds(api_pids) - api_cpu0
        redis_cpu = cpu_seconds(redis_pids) - redis_cpu0
        load.join()
        elapsed = time.monotonic() - t0
        result = {
            "jobs_stored": args.jobs,
            "redis_bytes_per_job": round(per_job),
            "polls": len(lat),
            "polls_per_s": round(len(lat) / args.seconds),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2),
            "wall_s": round(elapsed, 1),
            # CPU per poll does not depend on the machine's load (the rate does): the API's
            # processes and Redis, what a poll costs the server whoever else runs.
            "api_cpu_ms_per_poll": round(api_cpu * 1000 / max(1, len(lat)), 3),
            "redis_cpu_ms_per_poll": round(redis_cpu * 1000 / max(1, len(lat)), 3),
            "load_average": os.getloadavg()[0],
        }
        result["client_cpu_ms_per_poll"] = round(client_cpu * 1000 / max(1, len(lat)), 3)
        per_poll = (api_cpu + redis_cpu) / max(1, len(lat))
        # What 2 idle cores could serve: the server alone (clients elsewhere), and with
        # this benchmark's own load generator on the same 2 cores.
        result["polls_per_s_2_idle_cores"] = round(2 / per_poll) if per_poll else None
        with_client = per_poll + client_cpu / max(1, len(lat))
        result["polls_per_s_2_idle_cores_client_included"] = round(2 / with_client)
        result.update(progress_overhead(r))
        print(json.dumps(result, indent=2))
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def progress_overhead(r) -> dict[str, float]:
    """Cost of one progress report (what a worker does per chunk) against one chunk's I/O."""
    from service.config import load
    from service.job import new_job
    from service.store import RedisJobStore as JobStore
    from vhdlib.progress import Progress
    from workers.tasks import JobRun
    store = JobStore(r, prefix="benchp")
    job, _ = store.create(new_job("convert", "h", "vms", "d.vhd"))
    settings = load({}, prefix="benchp", progress_interval=0.0)
    run = JobRun(job.id, store, settings)
    outcome, _ = store.claim(job.id, run.token, 60, "bench", 5)
    assert outcome == "claimed"
    n = 200
    t0 = time.perf_counter()
    for i in range(n):
        run._on_progress(Progress("convert", "copy", i, n, i << 20, n << 20))
        run._on_checkpoint({"phase": "copy", "cursor": i << 20, "journal": "/x.vhdmend.json"})
        run._cancel_requested()
        run._pause_requested()
    per_chunk = (time.perf_counter() - t0) / n
    # One chunk of I/O: vhdlib's default chunk (CHUNK_BYTES, 256 MiB, or 3 s), written
    # and fsync'd here: a lower bound of a real chunk's time (no reads, page cache warm).
    # Also reported for a 64 MiB chunk, a small ``VHDMEND_CHUNK_BYTES``.
    from vhdlib.ops.operation import CHUNK_BYTES
    out: dict[str, float] = {"progress_cost_per_chunk_ms": round(per_chunk * 1000, 3)}
    buf = os.urandom(1 << 20)
    for label, size in (("64MiB", 64 << 20), ("default_chunk", CHUNK_BYTES)):
        with tempfile.NamedTemporaryFile(dir=REPO / "bench") as f:
            t0 = time.perf_counter()
            for _ in range(size >> 20):
                f.write(buf)
            f.flush()
            os.fsync(f.fileno())
            io_time = time.perf_counter() - t0
        out[f"io_time_{label}_ms"] = round(io_time * 1000, 1)
        out[f"progress_overhead_{label}_percent"] = round(100 * per_chunk / io_time, 3)
    return out


if __name__ == "__main__":
    main()
