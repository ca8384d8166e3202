"""``vhdmend up``: Redis, one worker and the API on one machine, supervised.

Each runs as a child of this process (:mod:`vhdmend.supervisor`): one that dies is
restarted with backoff, and SIGTERM/SIGINT stop them all. A job the dead worker held
resumes from its journal once its lease expires: the restarted worker's reaper requeues
it (it runs in every worker, a single one included).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sys
import time
from typing import Any

from vhdmend.backoff import BackoffPolicy
from vhdmend.supervisor import ChildSpec, Supervisor


def add_options(p: argparse.ArgumentParser) -> None:
    """The supervision options of ``vhdmend up``."""
    p.add_argument("--restart-delay", type=float, default=1.0, metavar="SECONDS",
                   help="wait before restarting a process that died; doubles with each "
                        "exit in a row (default 1)")
    p.add_argument("--restart-max-delay", type=float, default=60.0, metavar="SECONDS",
                   help="cap of that wait (default 60)")
    p.add_argument("--healthy-after", type=float, default=60.0, metavar="SECONDS",
                   help="a process up this long was healthy: its exit counts as the "
                        "first again (default 60)")
    p.add_argument("--give-up-after", type=int, default=10, metavar="N",
                   help="N quick exits in a row are a crash loop: stop everything and "
                        "exit 1 (default 10; 0: keep restarting)")
    p.add_argument("--stop-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="on stop, wait this long for each process before SIGKILL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_command(state_dir: str, port: int) -> list[str]:
    """A loopback redis-server with AOF in ``state_dir``; SystemExit when not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("vhdmend up: redis-server not found. Install it (Debian/Ubuntu: "
                         "'apt-get install redis-server'; macOS: 'brew install redis') or run "
                         "the API and workers against an existing Redis with 'vhdmend serve' "
                         "and 'vhdmend worker' (VHDMEND_REDIS_URL).")
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", state_dir,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes"]


def answers(port: int, probe: bytes | None = None, expect: bytes = b"") -> bool:
    """Whether something on 127.0.0.1:``port`` accepts (and answers ``probe``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            if probe is None:
                return True
            s.sendall(probe)
            return s.recv(16).startswith(expect)
    except OSError:
        return False


def wait_until(sup: Supervisor, ready: Any, seconds: float) -> bool:
    """Supervise (restarts included) until ``ready()`` or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not sup.gave_up and not sup.stopping:
        if ready():
            return True
        sup.check()
        time.sleep(0.1)
    return False


def run_up(args: argparse.Namespace, roots: str) -> int:
    """Start the stack and supervise it until SIGTERM/SIGINT (0) or a crash loop (1)."""
    state_dir = args.state_dir or os.path.join(os.path.expanduser("~"), ".local", "state",
                                               "vhdmend")
    os.makedirs(state_dir, exist_ok=True)
    token = os.environ.get("VHDMEND_API_TOKEN") or secrets.token_urlsafe(24)
    redis_port = free_port()
    env = {**os.environ, "VHDMEND_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "VHDMEND_HOST": args.host_name, "VHDMEND_ROOTS": roots,
           "VHDMEND_API_TOKEN": token,
           "VHDMEND_WEBHOOK_ALLOW_HOSTS": os.environ.get("VHDMEND_WEBHOOK_ALLOW_HOSTS",
                                                         "127.0.0.1,localhost")}
    pool = "solo" if sys.platform == "win32" else "prefork"
    log = os.path.join
    specs = [
        ChildSpec("redis", redis_command(state_dir, redis_port), env,
                  log(state_dir, "redis.log")),
        # Mingle and gossip coordinate several workers over the broker; with one they
        # only delay each (re)start.
        ChildSpec("worker", [sys.executable, "-m", "celery", "-A", "workers.celery_app",
                             "worker", "-Q", f"vhdmend.{args.host_name}", f"--pool={pool}",
                             "--concurrency=1", "--without-mingle", "--without-gossip",
                             "--loglevel=info", "-n", f"{args.host_name}@%h"],
                  env, log(state_dir, "worker.log")),
        ChildSpec("api", [sys.executable, "-m", "vhdmend", "serve", "--dev", "--bind",
                          f"127.0.0.1:{args.port}"], env, log(state_dir, "api.log")),
    ]
    policy = BackoffPolicy(base=args.restart_delay, cap=args.restart_max_delay,
                           reset_after=args.healthy_after, give_up_after=args.give_up_after)
    sup = Supervisor(specs, state_dir, policy, stop_timeout=args.stop_timeout)
    sup.install_signals()
    try:
        sup.start(sup.child("redis"))
        if not wait_until(sup, lambda: answers(redis_port, b"PING\r\n", b"+PONG"), 10):
            if sup.stopping or sup.gave_up:
                return sup.run()
            raise SystemExit(f"vhdmend up: redis-server did not start; see "
                             f"{state_dir}/redis.log")
        sup.start(sup.child("worker"))
        sup.start(sup.child("api"))
        if not wait_until(sup, lambda: answers(args.port), 60):
            if sup.stopping or sup.gave_up:
                return sup.run()
            raise SystemExit(f"vhdmend up: the API did not start on port {args.port}; see "
                             f"{state_dir}/api.log")
    except BaseException:
        sup.stop_all()
        raise
    url = f"http://127.0.0.1:{args.port}"
    print(f"vhdmend is up: {url}  (docs {url}/docs)", flush=True)
    print(f"token: {token}", flush=True)
    print(f"export VHDMEND_URL={url} VHDMEND_API_TOKEN={token}", flush=True)
    print(f"logs, PID files and Redis data: {state_dir}", flush=True)
    code = sup.run()
    print("stopped" if not sup.gave_up else f"stopped: {sup.gave_up}", file=sys.stderr,
          flush=True)
    return code
