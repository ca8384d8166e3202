"""A malformed Redis location stops every server entry point with one clear line naming the
problem and a usage exit code, never a traceback: ``vhdmend serve``/``worker``, Celery's
own ``-A workers.celery_app`` and gunicorn on ``api:wsgi_app()`` (as deploy/ runs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BAD = {"VHDMEND_REDIS_URL": "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:x",
       "VHDMEND_REDIS_MASTER_NAME": "vhdmend"}
PROBLEM = "sentinel entry 'sentinel://127.0.0.1:x': the port is not a number"


def run(argv: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("VHDMEND_")}
    full.update({"PYTHONPATH": str(REPO), **env})
    return subprocess.run(argv, env=full, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("argv", [
    ["serve", "--dev"],
    ["serve"],
    ["worker", "--host", "h1", "--root", "vms=."],
])
def test_vhdmend_server_commands_refuse_a_bad_redis_url(argv, tmp_path) -> None:
    done = run([sys.executable, "-m", "vhdmend", *argv], BAD, tmp_path)
    assert done.returncode == 2, done.stderr
    assert PROBLEM in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_sentinel_url_without_master_name_is_named(tmp_path) -> None:
    done = run([sys.executable, "-m", "vhdmend", "serve", "--dev"],
               {"VHDMEND_REDIS_URL": "sentinel://127.0.0.1:26379"}, tmp_path)
    assert done.returncode == 2
    assert "VHDMEND_REDIS_MASTER_NAME is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_celery_loading_the_worker_app_refuses_it(tmp_path) -> None:
    done = run([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"], BAD,
               tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"vhdmend: invalid configuration: {PROBLEM}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_gunicorn_stops_instead_of_respawning(tmp_path) -> None:
    exe = shutil.which("gunicorn")
    if exe is None:
        pytest.skip("gunicorn not installed")
    done = run([exe, "--bind", "127.0.0.1:0", "--workers", "1", "api:wsgi_app()"], BAD,
               tmp_path)
    assert done.returncode != 0
    assert f"vhdmend: invalid configuration: {PROBLEM}" in done.stderr
    assert "Worker failed to boot" in done.stderr
    assert "Traceback" not in done.stderr
