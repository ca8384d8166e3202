"""The process supervisor of ``vhdmend up``: starts Redis, the worker and the API as
children, restarts one that dies (:mod:`vhdmend.backoff`), forwards SIGTERM/SIGINT and
stops them all, leaving no orphan.

Each child runs in its own session (process group), so the terminal's Ctrl-C reaches only
the supervisor, which stops the children in order (the API, then the worker, Redis last),
and so a dead child's leftovers (a Celery pool process) are killed with its group before
the restart. ``STATE_DIR/<name>.pid`` holds each child's current PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vhdmend.backoff import Backoff, BackoffPolicy

#: Seconds between looks at the children.
POLL = 0.1


@dataclass
class ChildSpec:
    """One supervised program: its argv, environment and log file."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    log_path: str
    #: Extra environment computed at each start, from the previous process's PID (or None).
    env_for: Callable[[int | None], dict[str, str]] | None = None


@dataclass
class Child:
    spec: ChildSpec
    backoff: Backoff
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    last_pid: int | None = None
    starts: int = 0
    history: list[tuple[float, int | None]] = field(default_factory=list)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Run children until told to stop, restarting any that exits."""

    def __init__(self, specs: Sequence[ChildSpec], state_dir: str, policy: BackoffPolicy,
                 *, stop_timeout: float = 10.0,
                 say: Callable[[str], None] | None = None) -> None:
        self.children = [Child(s, Backoff(policy)) for s in specs]
        self.state_dir = state_dir
        self.stop_timeout = stop_timeout
        self.say = say or (lambda msg: print(f"vhdmend up: {msg}", file=sys.stderr,
                                             flush=True))
        self._stop = threading.Event()
        self.stop_signal: int | None = None
        self.gave_up: str | None = None

    # --- starting --------------------------------------------------------------------

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    def start(self, c: Child) -> None:
        spec = c.spec
        env = dict(spec.env)
        if spec.env_for is not None:
            env.update(spec.env_for(c.last_pid))
        with open(spec.log_path, "ab") as logf:
            c.proc = subprocess.Popen(list(spec.argv), env=env, stdout=logf,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        c.backoff.started()
        c.restart_at = None
        c.starts += 1
        self._write_pid(spec.name, c.proc.pid)
        if c.starts > 1:
            self.say(f"{spec.name} restarted (pid {c.proc.pid})")

    def _write_pid(self, name: str, pid: int) -> None:
        path = os.path.join(self.state_dir, f"{name}.pid")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)

    # --- the loop --------------------------------------------------------------------

    def install_signals(self) -> None:
        """SIGTERM and SIGINT stop the supervisor (and so every child)."""
        def handler(signum: int, _frame: Any) -> None:
            self.request_stop(signum)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    @property
    def stopping(self) -> bool:
        """A stop was requested (a signal, or a crash loop gave up)."""
        return self._stop.is_set()

    def request_stop(self, signum: int | None = None) -> None:
        self.stop_signal = signum
        self._stop.set()

    def run(self) -> int:
        """Supervise until a stop is requested (0) or a child gives up (1)."""
        try:
            while not self._stop.is_set():
                self.check()
                self._stop.wait(POLL)
        finally:
            self.stop_all()
        return 1 if self.gave_up else 0

    def check(self) -> None:
        """One look: reap exited children, restart those whose delay has passed."""
        now = time.monotonic()
        for c in self.children:
            if c.proc is not None:
                code = c.proc.poll()
                if code is None:
                    continue
                self._exited(c, code)
                if self._stop.is_set():
                    return
            elif c.restart_at is not None and now >= c.restart_at:
                self.start(c)

    def _exited(self, c: Child, code: int) -> None:
        assert c.proc is not None
        pid, uptime = c.proc.pid, c.backoff.uptime()
        c.history.append((time.time(), code))
        # The group may hold orphans of the dead process (a Celery pool child): they
        # would keep the job's journal locked and its lease renewed.
        kill_group(pid, signal.SIGKILL)
        c.proc, c.last_pid = None, pid
        delay = c.backoff.exited()
        name, log = c.spec.name, c.spec.log_path
        if delay is None:
            self.gave_up = (f"{name} crash loop: exited {c.backoff.failures - 1} times in a "
                            f"row, each within {c.backoff.policy.reset_after:g} s of its "
                            f"start; giving up and stopping everything (see {log})")
            self.say(self.gave_up)
            self._stop.set()
            return
        loop = (f"; crash loop: {c.backoff.failures} quick exits in a row"
                if c.backoff.crash_loop else "")
        self.say(f"{name} (pid {pid}) {describe_exit(code)} after {uptime:.1f} s; "
                 f"restarting in {delay:g} s{loop} (see {log})")
        c.restart_at = time.monotonic() + delay

    # --- stopping --------------------------------------------------------------------

    def stop_all(self) -> None:
        """SIGTERM each child in reverse start order, SIGKILL after ``stop_timeout``;
        then kill whatever is left in their process groups."""
        for c in reversed(self.children):
            proc, c.proc, c.restart_at = c.proc, None, None
            if proc is None:
                continue
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.say(f"{c.spec.name} (pid {proc.pid}) did not stop within "
                             f"{self.stop_timeout:g} s; killing it")
                    proc.kill()
                    proc.wait(10)
            kill_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.state_dir, f"{c.spec.name}.pid"))


def kill_group(pgid: int, sig: int) -> None:
    """Signal a child's process group (its own session), if any member is left."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
