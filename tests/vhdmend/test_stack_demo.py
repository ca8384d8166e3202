"""``vhdmend demo --stack``: README command 1 end to end, with a real redis-server, a real
Celery worker process and real HTTP; afterwards no process of the stack is left.

Like tests/workers: without ``redis-server`` this skips locally but fails in CI (``CI`` set).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vhdlib
from tests.vhdmend.helpers import REPO, cli_env
from vhdlib import demo

SIZE = 64 << 20

pytestmark = pytest.mark.redis


def check_service() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI but not installed")
        pytest.skip("redis-server not installed")
    pytest.importorskip("celery")
    pytest.importorskip("flask")


def disk_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with vhdlib.open(path) as disk:
        for pos in range(0, disk.virtual_size, 8 << 20):
            digest.update(disk.read(pos, min(8 << 20, disk.virtual_size - pos)))
    return digest.hexdigest()


def live_processes() -> dict[int, tuple[int, str]]:
    """pid -> (process group, cmdline) of every live (not zombie) process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z":
            procs[int(entry)] = (int(fields[2]), cmdline.decode(errors="replace"))
    return procs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scans /proc")
def test_demo_stack_end_to_end(tmp_path: Path) -> None:
    check_service()
    folder = tmp_path / "chain"
    state_parent = tmp_path / "tmp"
    state_parent.mkdir()
    env = {**cli_env(), "TMPDIR": str(state_parent)}  # the stack's state folder goes here
    run = subprocess.run(
        [sys.executable, "-m", "vhdmend", "demo", "--stack", "--size", "64M", "--dir",
         str(folder)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])

    # The printed result.
    assert re.search(r"^job \w+: succeeded in [\d.]+ s$", run.stdout, re.M), run.stdout
    assert "match: the result reads as the chain did" in run.stdout
    assert "MISMATCH" not in run.stdout
    assert "after (one fixed disk)" in run.stdout
    archive = re.search(r"the old chain is kept in (\S+) until", run.stdout)
    assert archive, run.stdout
    assert "submitted job" in run.stderr and "stopping the stack" in run.stderr

    # The base is now one fixed disk with the chain's content (the demo chain is seeded:
    # the same arguments give the same content).
    base = folder / "base.vhd"
    with vhdlib.open(base) as disk:
        assert len(disk.layers) == 1
        assert disk.info()["type"] == "fixed"
        assert disk.virtual_size == SIZE
    expected = demo.make_bloated_chain(tmp_path / "expected", size=SIZE)
    want = disk_sha256(expected[-1])
    assert disk_sha256(base) == want
    shas = re.findall(r"^  (?:chain|result) +([0-9a-f]{64})", run.stdout, re.M)
    assert shas == [want, want]
    archived = sorted(Path(archive.group(1)).iterdir())
    assert {p.name for p in archived} == {p.name for p in expected}
    # Only the result, the archive and nothing else (no journal, no temp output) remain.
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["base.vhd", Path(archive.group(1)).name])

    # No process of the stack survives: not in its process group, not naming its folders.
    group = re.search(r"process group (\d+)", run.stderr)
    assert group, run.stderr
    pgid = int(group.group(1))
    survivors = {pid: info for pid, info in live_processes().items()
                 if info[0] == pgid or str(tmp_path) in info[1]}
    assert survivors == {}
    # A clean run removes its state folder (Redis data and logs).
    assert list(state_parent.iterdir()) == []
