"""vhdlib and the disk commands must not pull in the service stack."""

from __future__ import annotations

import subprocess
import sys

from tests.vhdmend.helpers import REPO, cli_env, run_cli

SERVICE_MODULES = ("celery", "redis", "flask", "kombu", "marshmallow", "werkzeug")


def _loaded_after(code: str) -> list[str]:
    probe = (f"{code}\nimport sys\n"
             f"print(' '.join(m for m in {SERVICE_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=cli_env(), cwd=REPO, check=True).stdout
    return out.split()


def test_import_vhdlib_pulls_no_service_modules() -> None:
    assert _loaded_after("import vhdlib, vhdlib.chain, vhdlib.formats") == []


def test_disk_commands_pull_no_service_modules() -> None:
    code = ("from vhdmend import cli\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stderr(io.StringIO()):\n"
            "    cli.main(['info', '/nonexistent.vhd'])\n")
    assert _loaded_after(code) == []


def test_help_lists_service_commands() -> None:
    """``vhdmend --help`` (not a disk command) does load the service commands."""
    r = run_cli("--help")
    assert r.code == 0, r.err
    for name in ("up", "serve", "worker", "submit", "status", "watch"):
        assert f"    {name} " in r.out, name


def test_up_without_the_service_extra_says_to_install_it(tmp_path) -> None:
    # A finder that hides werkzeug and flask, as after `pip install vhdmend` (no extra)
    code = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('flask', 'werkzeug'):\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from vhdmend import cli\n"
            f"sys.exit(cli.main(['up', '--root', 'vms={tmp_path}', '--port', '1']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=cli_env(), cwd=REPO, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "vhdmend[service]" in r.stderr and "werkzeug" in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
