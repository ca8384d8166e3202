"""Running the CLI in a subprocess, as a user would (``python -m vhdmend``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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
