"""Service commands of the ``vhdmend`` CLI: ``up``, ``serve``, ``worker``, ``submit``,
``status``, ``watch`` (``volumes`` is :mod:`vhdmend.volumes_cli`, registered beside them).

Flask, Celery and Redis are imported inside the handlers only, so ``vhdmend info`` never
pays for them. Client commands talk HTTP with the standard library.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from vhdlib.ops import OPERATIONS
from vhdlib.ops.options import Option, merged
from vhdmend import up
from vhdmend.commands.declared import add_option, given
from vhdmend.up import free_port as free_port  # re-exported: `vhdmend stack-demo` uses it

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_CANCELLED = 0, 1, 2, 69, 130


def client_args(p: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token`` of every command that talks to the API."""
    p.add_argument("--url", default=os.environ.get("VHDMEND_URL", DEFAULT_URL))
    p.add_argument("--token", default=os.environ.get("VHDMEND_API_TOKEN"),
                   help="bearer token (default $VHDMEND_API_TOKEN)")


def add_commands(sub: Any) -> None:
    """Register the service commands on the CLI's subparsers."""
    p = sub.add_parser("up", help="single machine: Redis, the API and one worker")
    p.add_argument("--root", action="append", required=True, metavar="NAME=PATH",
                   help="a storage root for the local worker (repeatable)")
    p.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    p.add_argument("--host-name", default="local", help="the worker's host name")
    p.add_argument("--state-dir", default=None,
                   help="Redis data (AOF), logs and PID files "
                        "(default ~/.local/state/vhdmend)")
    up.add_options(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("serve", help="run the HTTP API (gunicorn)")
    p.add_argument("--bind", default="127.0.0.1:8080")
    p.add_argument("--workers", type=int, default=2, help="gunicorn processes")
    p.add_argument("--threads", type=int, default=8, help="threads per process")
    p.add_argument("--dev", action="store_true", help="Werkzeug's server, not gunicorn")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run the Celery worker of a storage host")
    p.add_argument("--host", required=True, dest="worker_host", metavar="NAME",
                   help="this storage host's name (its queue is vhdmend.NAME)")
    p.add_argument("--root", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--concurrency", type=int, default=2, help="jobs at once")
    p.add_argument("--pool", default=None, help="Celery pool (default prefork; solo on Windows)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("submit", help="submit a job over HTTP")
    from service import kinds  # the job-kind registry (no Flask, Celery or Redis)
    p.add_argument("type", choices=kinds.names())
    p.add_argument("path", help="path relative to the root")
    p.add_argument("--host", dest="job_host", default="local")
    p.add_argument("--root", dest="job_root", required=True)
    p.add_argument("--operation", choices=sorted(OPERATIONS),
                   help="plan: the operation to plan (default remediate)")
    # Every operation's options, as vhdlib declares them (paths relative to the root);
    # only those given are sent, the server applies the defaults.
    for opt in submit_options():
        add_option(p, opt, positional=False, flag=SUBMIT_FLAGS.get(opt.name), defaults=False,
                   prefix="option_")
    p.add_argument("--external-ref")
    p.add_argument("--callback-url")
    p.add_argument("--callback-secret")
    p.add_argument("--idempotency-key")
    p.add_argument("--watch", action="store_true", help="then show progress until done")
    client_args(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show a job, or list jobs")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--state")
    p.add_argument("--host", dest="job_host")
    client_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", help="show a job's progress until it finishes")
    p.add_argument("job_id")
    p.add_argument("--interval", type=float, default=0.5)
    client_args(p)
    p.set_defaults(func=cmd_watch)


# --- HTTP client -------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('title', '')}: {body.get('detail', '')}")
        self.status, self.body = status, body


def call(args: argparse.Namespace, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """One API request; returns ``(json, headers)`` or raises :class:`ApiError`."""
    hdrs = {"Accept": "application/json", **(headers or {})}
    if args.token:
        hdrs["Authorization"] = f"Bearer {args.token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, headers=hdrs,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as e:
        try:
            problem = json.loads(e.read() or b"{}")
        except ValueError:
            problem = {"title": e.reason}
        raise ApiError(e.code, problem) from e


def _client(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ApiError as e:
            print(f"vhdmend: {e}", file=sys.stderr)
            for field, msgs in (e.body.get("errors") or {}).items():
                print(f"  {field}: {msgs}", file=sys.stderr)
            return EXIT_USAGE if 400 <= e.status < 500 else EXIT_UNAVAILABLE
        except urllib.error.URLError as e:
            print(f"vhdmend: cannot reach {args.url}: {e.reason}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    wrapped.__doc__ = func.__doc__
    return wrapped


#: Flags of ``submit`` spelled apart from their option (``type`` is the job's type there).
SUBMIT_FLAGS = {"type": "--disk-type"}


def submit_options() -> tuple[Option, ...]:
    """Every job kind's declared options, each once (plan's ``operation`` is its own flag):
    the operations' and any read-only kind's."""
    from service import kinds
    return tuple(o for o in merged(*(kinds.get(n).declared for n in kinds.names()))
                 if o.name != "operation")


@_client
def cmd_submit(args: argparse.Namespace) -> int:
    """``vhdmend submit TYPE PATH --root R``: POST /v1/jobs, print the job id."""
    options = given(args, submit_options(), prefix="option_")
    if args.type == "plan":
        options["operation"] = args.operation or "remediate"
    body: dict[str, Any] = {"type": args.type, "host": args.job_host, "root": args.job_root,
                            "path": args.path, "options": options}
    if args.external_ref:
        body["external_ref"] = args.external_ref
    if args.callback_url:
        body["callback"] = {"url": args.callback_url, "secret": args.callback_secret or ""}
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    job, _ = call(args, "POST", "/v1/jobs", body, headers)
    print(job["id"])
    if args.watch:
        args.job_id, args.interval = job["id"], 0.5
        return int(cmd_watch(args))
    return EXIT_OK


@_client
def cmd_status(args: argparse.Namespace) -> int:
    """Print one job as JSON, or a table of jobs."""
    if args.job_id:
        job, _ = call(args, "GET", f"/v1/jobs/{args.job_id}")
        print(json.dumps(job, indent=2))
        return EXIT_OK
    query = "&".join(f"{k}={v}" for k, v in (("state", args.state), ("host", args.job_host))
                     if v)
    page, _ = call(args, "GET", "/v1/jobs" + (f"?{query}" if query else ""))
    for job in page["items"]:
        pct = (job.get("progress") or {}).get("percent")
        print(f"{job['id']}  {job['type']:<9} {job['state']:<10} "
              f"{'' if pct is None else f'{pct:5.1f}%':>6}  {job['host']}:{job['root']}/"
              f"{job['path']}")
    return EXIT_OK


@_client
def cmd_watch(args: argparse.Namespace) -> int:
    """Poll a job and draw its progress until it finishes; exit 0 only on success."""
    from vhdlib.progress import Progress
    from vhdmend.progressbar import ProgressReporter
    bar = ProgressReporter()
    last_state = None
    while True:
        job, _ = call(args, "GET", f"/v1/jobs/{args.job_id}")
        if job["state"] != last_state:
            last_state = job["state"]
            print(f"\n{job['id']}: {job['state']}"
                  + (f" ({job['reason']})" if job.get("reason") else ""), file=sys.stderr)
        p = job.get("progress")
        if p:
            bar(Progress(job["type"], job.get("phase") or "", int(p.get("phase_done", 0)),
                         int(p.get("phase_total", 0)), int(p["done"]), int(p["total"])))
        if job["state"] in ("succeeded", "failed", "cancelled", "paused"):
            print(file=sys.stderr)
            if getattr(args, "print_job", True):
                print(json.dumps({k: job[k] for k in ("id", "state", "result", "error")},
                                 indent=2))
            return {"succeeded": EXIT_OK, "cancelled": EXIT_CANCELLED,
                    "paused": EXIT_OK}.get(job["state"], EXIT_FAILED)
        time.sleep(args.interval)


# --- servers -----------------------------------------------------------------------------


def _roots_env(specs: list[str]) -> str:
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not os.path.isdir(path):
            raise SystemExit(f"vhdmend: --root {spec!r}: expected NAME=PATH of a directory")
    return ",".join(f"{s.partition('=')[0]}={os.path.abspath(s.partition('=')[2])}"
                    for s in specs)


#: Import names of the ``service`` extra (pyproject.toml) the server commands need.
SERVICE_MODULES = ("flask", "werkzeug", "marshmallow", "apispec", "celery", "kombu", "redis",
                   "ulid")


def require_service_extra() -> None:
    """Refuse (exit 2, a clear message) when the ``service`` extra is not installed."""
    import importlib

    from vhdlib.errors import UsageError
    missing = []
    for name in SERVICE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError("the service commands need the service extra: "
                         "pip install 'vhdmend[service]' (missing: " + ", ".join(missing) + ")")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API: gunicorn (threads) in production, Werkzeug with ``--dev``."""
    require_service_extra()
    from service import config
    config.load()       # a bad setting is a clear error here, before gunicorn starts
    if not args.dev and shutil.which("gunicorn"):
        argv = ["gunicorn", "--bind", args.bind, "--workers", str(args.workers),
                "--threads", str(args.threads), "--worker-class", "gthread",
                "--access-logfile", "-", "api:wsgi_app()"]
        os.execvp(argv[0], argv)
    from api import create_app
    host, _, port = args.bind.rpartition(":")
    create_app().run(host=host or "127.0.0.1", port=int(port), threaded=True)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """Run this host's Celery worker on its own queue."""
    require_service_extra()
    os.environ["VHDMEND_HOST"] = args.worker_host
    os.environ["VHDMEND_ROOTS"] = _roots_env(args.root)
    from service.hosts import queue_for
    from workers.celery_app import worker_app
    app = worker_app()
    pool = args.pool or ("solo" if sys.platform == "win32" else "prefork")
    argv = ["worker", "-Q", queue_for(args.worker_host), f"--pool={pool}",
            f"--concurrency={1 if pool == 'solo' else args.concurrency}",
            f"--loglevel={args.loglevel}", "-n", f"{args.worker_host}@%h"]
    app.worker_main(argv)
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    """Redis + one worker + the API on one machine, supervised (:mod:`vhdmend.up`);
    Ctrl-C or SIGTERM stops everything."""
    require_service_extra()
    return up.run_up(args, _roots_env(args.root))
