"""``demo --stack``: the service end to end on one machine, in one process tree.

1. a private stack exactly as ``vhdmend up`` starts it (it *is* ``vhdmend up``, run as a
   child in its own process group): redis-server on a free port with its data in a temporary
   state folder, one worker for host ``demo`` with root ``demo=<the demo folder>``, the API on
   a free loopback port, a generated token;
2. the bloated demo chain generated in that root (:func:`vhdlib.demo.make_bloated_chain`),
   its content digested (SHA-256 of the virtual disk) while the stack boots;
3. a ``remediate`` job submitted over HTTP (``POST /v1/jobs``) and watched with the client's
   ``watch`` (``GET /v1/jobs/{id}`` polls, the CLI's progress bar) until it ends;
4. the stack stopped (also on Ctrl-C, SIGTERM or an error: ``up`` stops its worker and Redis,
   then anything left in the process group is killed), the result printed: the job's state,
   the sizes before and after, the archive folder, and the result's digest against the
   chain's. Exit 0 only when the job succeeded and the digests match.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import hashlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path
from types import FrameType
from typing import Any

import vhdlib
from vhdlib.errors import Cancelled, VhdlibError
from vhdmend.commands.demo_files import demo_folder, print_sizes, sizes_of
from vhdmend.output import emit_json, error_line, note
from vhdmend.sizes import human_size

HOST = "demo"
ROOT = "demo"
#: Modules the stack needs (the ``service`` extra).
SERVICE_MODULES = ("flask", "werkzeug", "celery", "redis", "marshmallow", "ulid")
#: ``VHDMEND_*`` settings passed on to the private stack (tuning only: the stack's Redis,
#: roots, host and tokens are its own, whatever the caller's environment says).
PASSED_SETTINGS = ("VHDMEND_DEBUG", "VHDMEND_CHUNK_BYTES", "VHDMEND_CHUNK_SECONDS",
                   "VHDMEND_MAX_RATE", "VHDMEND_PROGRESS_INTERVAL", "VHDMEND_LEASE_SECONDS",
                   "VHDMEND_TICK_SECONDS")
#: Seconds for redis-server, the API and the worker to come up (Celery's start is slow on a
#: loaded machine).
READY_TIMEOUT = 120.0
#: Seconds ``up`` gets to stop its worker and Redis (it gives each 10 s).
STOP_TIMEOUT = 30.0
TERMINAL = ("succeeded", "failed", "cancelled")
EXIT_FAILED, EXIT_CANCELLED = 1, 130
_READ = 4 << 20


class StackError(VhdlibError):
    """The local stack could not be started or stopped working (exit 69, EX_UNAVAILABLE)."""

    exit_code = 69
    code = "service_unavailable"


def content_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 of the virtual disk ``path`` reads as (its whole chain), and its size."""
    digest = hashlib.sha256()
    buf = bytearray(_READ)
    with vhdlib.open(path) as disk:
        size = disk.virtual_size
        pos = 0
        while pos < size:
            n = min(_READ, size - pos)
            view = memoryview(buf)[:n]
            disk.readinto(pos, view)
            digest.update(view)
            pos += n
    return digest.hexdigest(), size


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except OSError:
            return []
        return [pgid]
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state ppid pgrp ...
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


class Stack:
    """``vhdmend up`` as a child in a new session: its worker and redis-server share the
    process group, so :meth:`stop` can make sure none of them outlives the demo."""

    def __init__(self, root: Path, state_dir: Path) -> None:
        from vhdmend import service_cli
        self.svc = service_cli
        self.root, self.state_dir = root, state_dir
        self.token = secrets.token_urlsafe(24)
        self.port = service_cli.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = argparse.Namespace(url=self.url, token=self.token)
        self.proc: subprocess.Popen[bytes] | None = None
        self.failure: str | None = None
        self._watching = threading.Event()

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("VHDMEND_") or k in PASSED_SETTINGS}
        env["VHDMEND_API_TOKEN"] = self.token
        argv = [sys.executable, "-m", "vhdmend", "up", "--root", f"{ROOT}={self.root}",
                "--host-name", HOST, "--port", str(self.port),
                "--state-dir", str(self.state_dir)]
        with open(self.state_dir / "up.log", "ab") as log:
            # A new session: Ctrl-C on the terminal reaches this process only, which then
            # stops the stack in order (cancel the job, then up stops its worker and Redis).
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._watching.set()
        threading.Thread(target=self._watchdog, name="stack-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        """``up`` exiting on its own is fatal: interrupt the main thread (a poll loop)."""
        while self._watching.is_set():
            if self.proc is not None and self.proc.poll() is not None:
                if self._watching.is_set():
                    self.failure = (f"the stack stopped (vhdmend up exited with "
                                    f"{self.proc.returncode}); {self.log_hint()}")
                    _thread.interrupt_main()
                return
            time.sleep(0.2)

    def log_hint(self) -> str:
        tail = ""
        with contextlib.suppress(OSError):
            lines = (self.state_dir / "up.log").read_text(errors="replace").splitlines()
            if lines:
                tail = f"last line of up.log: {lines[-1].strip()!r}; "
        return f"{tail}logs in {self.state_dir}"

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One API request; :class:`StackError` when the API refuses or is unreachable."""
        try:
            data, _ = self.svc.call(self.client, method, path, body)
        except self.svc.ApiError as e:
            raise StackError(f"{method} {path}: {e}") from e
        except (urllib.error.URLError, OSError) as e:
            raise StackError(f"{method} {path}: cannot reach {self.url}: {e}") from e
        return data

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the API answers and the worker of host ``demo`` has registered its root."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                hosts = self.svc.call(self.client, "GET", "/v1/hosts")[0]
                if any(h["host"] == HOST and ROOT in h.get("roots", {})
                       for h in hosts.get("items", [])):
                    return
            except (self.svc.ApiError, urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise StackError(f"the stack did not come up within {timeout:.0f} s; "
                                 f"{self.log_hint()}")
            time.sleep(0.25)

    def cancel(self, job_id: str, timeout: float = 20.0) -> None:
        """Best effort on Ctrl-C: ask the worker to cancel between chunks, wait a little."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Exception):
            self.svc.call(self.client, "POST", f"/v1/jobs/{job_id}/cancel")
            print(f"\ncancelling job {job_id} (the chain stays as it was)", file=sys.stderr)
            while time.monotonic() < deadline:
                job = self.svc.call(self.client, "GET", f"/v1/jobs/{job_id}")[0]
                if job["state"] in TERMINAL:
                    return
                time.sleep(0.3)

    def stop(self) -> list[int]:
        """Stop ``up`` (it stops its worker and Redis), then kill what is left of the group.

        Returns the processes that had to be killed (empty after a clean stop)."""
        self._watching.clear()
        if self.proc is None:
            return []
        pgid = self.proc.pid
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass  # a second Ctrl-C: no more waiting, what is left is killed now
        killed = _group_members(pgid)
        if killed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return killed


def _preflight() -> None:
    missing = [m for m in SERVICE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise StackError(f"the service is not installed (missing {', '.join(missing)}): "
                         f"pip install -e '.[service]'; or run the offline 'vhdmend demo'")
    if shutil.which("redis-server") is None:
        raise StackError("redis-server not found: install it (Debian/Ubuntu: 'sudo apt-get "
                         "install redis-server'; macOS: 'brew install redis'); or run the "
                         "offline 'vhdmend demo'")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _watch(stack: Stack, job_id: str, quiet: bool) -> None:
    """The client's ``vhdmend watch`` (progress bar on stderr); the demo prints its own
    summary instead of the job's JSON."""
    args = argparse.Namespace(url=stack.url, token=stack.token, job_id=job_id, interval=0.5,
                              print_job=False)
    if not quiet:
        stack.svc.cmd_watch(args)
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
            contextlib.redirect_stderr(devnull):
        stack.svc.cmd_watch(args)


def cmd_stack_demo(args: argparse.Namespace) -> int:
    from vhdlib import demo

    _preflight()
    quiet = args.quiet or args.json
    folder = demo_folder(args.dir).resolve()
    note(f"generating a bloated {args.format} chain in {folder} "
         f"({human_size(args.size)} virtual)", quiet=quiet)
    chain = demo.make_bloated_chain(folder, size=args.size, fmt=args.format)
    newest = chain[-1]
    before = sizes_of(chain)
    if not quiet:
        print_sizes("before (the chain)", before)

    state_dir = Path(tempfile.mkdtemp(prefix="vhdmend-stack-"))
    stack = Stack(folder, state_dir)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    job_id: str | None = None
    job: dict[str, Any] = {}
    ok = False
    try:
        stack.start()
        note(f"starting the stack (vhdmend up): redis-server, the API on {stack.url}, a worker "
             f"for host {HOST!r} with root {ROOT}={folder}; process group {stack.pgid}; "
             f"logs in {state_dir}", quiet=quiet)
        chain_sha, virtual_size = content_sha256(newest)  # while the stack boots
        stack.wait_ready()
        body = {"type": "remediate", "host": HOST, "root": ROOT,
                "path": str(newest.relative_to(folder)), "options": {"type": args.type}}
        started = time.monotonic()
        job_id = str(stack.call("POST", "/v1/jobs", body)["id"])
        note(f"submitted job {job_id}: POST {stack.url}/v1/jobs "
             f"{{type: remediate, host: {HOST}, root: {ROOT}, path: {body['path']}}}",
             quiet=quiet)
        _watch(stack, job_id, quiet)
        job = stack.call("GET", f"/v1/jobs/{job_id}")
        seconds = time.monotonic() - started
        ok = True
    except KeyboardInterrupt:
        if stack.failure:
            raise StackError(stack.failure) from None
        if job_id is not None and stack.proc is not None and stack.proc.poll() is None:
            with contextlib.suppress(KeyboardInterrupt):
                stack.cancel(job_id)
        raise Cancelled("interrupted" + (f"; job {job_id} cancelled, the chain is as it was"
                                         if job_id else "")) from None
    finally:
        note("stopping the stack", quiet=quiet)
        try:
            killed = stack.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if killed:
            note(f"killed leftover processes {killed}", quiet=quiet)
        if ok and job.get("state") == "succeeded":
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            note(f"logs kept in {state_dir}", quiet=quiet)
    return _report(args, folder, chain, before, job, seconds, chain_sha, virtual_size)


def _report(args: argparse.Namespace, folder: Path, chain: list[Path],
            before: dict[str, Any], job: dict[str, Any], seconds: float, chain_sha: str,
            virtual_size: int) -> int:
    quiet = args.quiet or args.json
    state = job.get("state")
    result = job.get("result") or {}
    # The API shows paths relative to the root (the demo folder): make it a local path.
    archive = str(folder / result["archive"]) if result.get("archive") else None
    summary: dict[str, Any] = {"job": {k: job.get(k) for k in ("id", "state", "result",
                                                                "error")},
                               "seconds": round(seconds, 1),
                               "folder": str(folder), "virtual_size": virtual_size,
                               "before": before, "archive": archive}
    if state != "succeeded":
        if args.json:
            emit_json(summary)
        error = job.get("error") or {}
        error_line(f"job {job.get('id')} {state}"
                   + (f": {error.get('detail') or error.get('title')}" if error else ""))
        return EXIT_CANCELLED if state == "cancelled" else EXIT_FAILED
    base = chain[0]  # the result takes the base disk's name
    with vhdlib.open(base) as disk:
        layers = len(disk.layers)
        disk_type = disk.info().get("type")
    result_sha, result_size = content_sha256(base)
    match = result_sha == chain_sha and result_size == virtual_size
    after = sizes_of([base])
    saved = before["allocated_bytes"] - after["allocated_bytes"]
    summary.update(after=after, saved_bytes=saved, result={"type": disk_type, "layers": layers},
                   sha256={"chain": chain_sha, "result": result_sha, "match": match})
    if args.json:
        emit_json(summary)
    elif not quiet:
        print(f"job {job['id']}: {state} in {seconds:.1f} s")
        print_sizes(f"after (one {disk_type} disk)", after)
        pct = 100 * saved / before["allocated_bytes"] if before["allocated_bytes"] else 0.0
        print(f"virtual size {human_size(virtual_size)}: the result takes "
              f"{human_size(max(saved, 0))} ({pct:.0f}%) less space on the volume than the "
              f"chain did")
        print(f"the old chain is kept in {archive or folder} until you "
              f"delete it")
        print(f"sha256 of the disk's content ({human_size(virtual_size)} read from each):")
        print(f"  chain  {chain_sha}")
        print(f"  result {result_sha}  "
              + ("match: the result reads as the chain did" if match else "MISMATCH"))
    if not match or layers != 1:
        error_line(f"the result {base} does not read as the chain did"
                   if not match else f"the result {base} still has {layers} layers")
        return EXIT_FAILED
    return 0
