"""Running the CLI in a subprocess, as a user would (``python -m vhdmend``)."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("VHDMEND_DEBUG", None)
    return env


@dataclass
class Result:
    """What a CLI run left: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_argv(*args: object) -> list[str]:
    return [sys.executable, "-m", "vhdmend", *map(str, args)]


def run_cli(*args: object, cwd: Path | None = None, timeout: float = 300) -> Result:
    """Run ``vhdmend ARGS`` to completion."""
    proc = subprocess.run(cli_argv(*args), capture_output=True, text=True, env=cli_env(),
                          cwd=cwd or REPO, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_error(r: Result, code: int) -> None:
    """Exit ``code`` with one ``vhdmend: error:`` line and no traceback."""
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err, r.err
    assert "vhdmend: error: " in r.err, r.err


def file_tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (to compare whole folders)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Forked:
    """``vhdmend ARGV`` (environment ``env``) in a child forked from this process, which
    has imported ``vhdmend``: a real process that SIGKILL ends as it ends ``python -m
    vhdmend``, without a fresh interpreter's ~0.5 s start-up (kill -9 loops run hundreds).
    stdin and stdout on /dev/null, stderr kept in a file; the subset of ``Popen`` the
    loops use."""

    def __init__(self, argv: list[object], env: dict[str, str]) -> None:
        # Imported here, in this process, so that every child starts warm (and only
        # the tests that fork import the CLI into pytest).
        from vhdmend import cli

        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed by communicate)
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the CLI, in the child; it never returns into pytest
            code = 70
            try:
                # pytest's heap is large late in a run: keep the child's collections off it
                # (each full pass would touch, so copy, every page of it).
                gc.freeze()
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(self._err.fileno(), 2)
                # pytest's capture objects point elsewhere: write to the new fds 1 and 2.
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                signal.signal(signal.SIGINT, signal.default_int_handler)
                for sig in (signal.SIGTERM, signal.SIGALRM):
                    signal.signal(sig, signal.SIG_DFL)
                os.environ.clear()
                os.environ.update(env)
                code = cli.main([str(a) for a in argv])
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                code = 70
            finally:
                os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def communicate(self, timeout: float) -> tuple[None, bytes]:
        """Wait for the exit (SIGKILL and fail after ``timeout`` s); return its stderr."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.returncode = -signal.SIGKILL
                raise subprocess.TimeoutExpired(f"forked vhdmend {self.pid}", timeout)
            time.sleep(0.0005)
        self._err.seek(0)
        err = self._err.read()
        self._err.close()
        return None, err
