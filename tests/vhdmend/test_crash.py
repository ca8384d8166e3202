"""Crash tests: SIGKILL the CLI at random instants of every operation, resume, compare.

For each operation a reference run goes uninterrupted; then, in ``TRIALS`` fresh copies of
the same inputs, the same command is killed with SIGKILL at a seeded random instant
(sometimes before its journal exists, mostly while it works), ``vhdmend resume JOURNAL``
finishes it (and is itself killed in some trials), and every file left in the folder must
be bit-identical to the reference run's. ``VHDMEND_CHUNK_BYTES`` makes checkpoints
frequent so kills land between and inside many chunks.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import vhdlib
from tests import realimages
from tests.vhdmend.helpers import cli_argv, cli_env, file_tree, run_cli
from vhdlib import demo

pytestmark = pytest.mark.slow

TRIALS = 24
MAX_TRIALS = 60
MIN_KILLS = 20
SIZE = 24 << 20
BLOCK = 256 << 10
CHUNK_BYTES = 256 << 10
UUID = "6d4da5ba-92bc-455c-85e8-241d0f445145"
TIMESTAMP = "1700000000"
JOURNAL_GLOB = "*.vhdmend.json"


def _argv_merge(d: Path, chain: list[Path]) -> list[object]:
    return ["merge", d / chain[-1].name, "--into", d / chain[0].name, "--archive",
            d / "archive"]


def _argv_compact(d: Path, chain: list[Path]) -> list[object]:
    return ["compact", d / chain[0].name]


def _argv_convert(d: Path, chain: list[Path]) -> list[object]:
    return ["convert", d / chain[-1].name, d / "out.vhd", "--type", "dynamic",
            "--uuid", UUID, "--timestamp", TIMESTAMP]


def _argv_remediate(d: Path, chain: list[Path]) -> list[object]:
    return ["remediate", d / chain[-1].name, "--archive", d / "archive",
            "--uuid", UUID, "--timestamp", TIMESTAMP]


#: operation -> (argv builder, the file whose disk must read as the original chain).
OPERATIONS: dict[str, tuple[Callable[[Path, list[Path]], list[object]], str]] = {
    "merge": (_argv_merge, "base.vhd"),
    "compact": (_argv_compact, "newest"),
    "convert": (_argv_convert, "out.vhd"),
    "remediate": (_argv_remediate, "base.vhd"),
}


@dataclass
class Template:
    """The pristine inputs, their content digest, and the chain's file names."""

    folder: Path
    chain: list[Path]
    content_sha256: str


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    folder = tmp_path_factory.mktemp("crash-template")
    chain = demo.make_bloated_chain(folder, size=SIZE, block_size=BLOCK, seed=7)
    with vhdlib.open(chain[-1]) as disk:
        sha = realimages.disk_sha256(disk)
    return Template(folder, chain, sha)


def _env() -> dict[str, str]:
    env = cli_env()
    env["VHDMEND_CHUNK_BYTES"] = str(CHUNK_BYTES)
    return env


def _without_run_litter(tree: dict[str, str]) -> dict[str, str]:
    """``tree`` less what a run killed before its first journal landed may leave: the run
    lock (``<journal>.lock``, an flock the kill freed) and the half-written journal
    (``<journal>.tmp``, never renamed). The next run reuses both and leaves neither."""
    return {k: v for k, v in tree.items()
            if not k.endswith((".vhdmend.json.lock", ".vhdmend.json.tmp"))}


def _journals(folder: Path) -> list[Path]:
    return sorted(folder.rglob(JOURNAL_GLOB))


def _spawn(argv: list[object]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cli_argv(*argv), env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes], what: str) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}: {err.decode()}"


def _run_and_kill(argv: list[object], folder: Path, *, wait_journal: bool,
                  delay: float) -> bool:
    """Start ``vhdmend ARGV``; SIGKILL it ``delay`` s after start (or after its journal
    appears). Returns True when the kill landed (the process was still running)."""
    proc = _spawn(argv)
    start = time.monotonic()
    if wait_journal:
        while proc.poll() is None and not _journals(folder) and time.monotonic() - start < 60:
            time.sleep(0.0005)
        start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < delay:
        time.sleep(0.0005)
    landed = proc.poll() is None
    if landed:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    if not landed:
        assert proc.returncode == 0, f"{argv[0]} failed before the kill: {err.decode()}"
    return landed


@dataclass
class Timing:
    to_journal: float
    total: float


def _reference(tmp_path: Path, template: Template, name: str) -> tuple[dict[str, str], Timing]:
    build, _ = OPERATIONS[name]
    ref = tmp_path / "reference"
    shutil.copytree(template.folder, ref)
    proc = _spawn(build(ref, template.chain))
    start = time.monotonic()
    to_journal = None
    while proc.poll() is None:
        if to_journal is None and _journals(ref):
            to_journal = time.monotonic() - start
        time.sleep(0.0005)
    total = time.monotonic() - start
    _finish(proc, f"reference {name}")
    return file_tree(ref), Timing(to_journal or total * 0.5, total)


def _result_file(folder: Path, template: Template, which: str) -> Path:
    return folder / (template.chain[-1].name if which == "newest" else which)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_kill_resume_bit_identical(tmp_path: Path, template: Template, name: str) -> None:
    build, result_name = OPERATIONS[name]
    expected, timing = _reference(tmp_path, template, name)
    assert not any(k.endswith(".vhdmend.json") for k in expected)
    # The reference result reads exactly as the chain did.
    with vhdlib.open(_result_file(tmp_path / "reference", template, result_name)) as disk:
        assert realimages.disk_sha256(disk) == template.content_sha256
    work = max(timing.total - timing.to_journal, 0.05)
    original = file_tree(template.folder)

    kills = 0
    scale = 0.9
    trial = -1
    # At least TRIALS trials, and more (up to MAX_TRIALS) until MIN_KILLS kills landed
    # while the CLI was running (a kill timed after the end does not count).
    while trial + 1 < TRIALS or (kills < MIN_KILLS and trial + 1 < MAX_TRIALS):
        trial += 1
        rng = random.Random(f"{name}-{trial}")
        folder = tmp_path / f"trial-{trial}"
        shutil.copytree(template.folder, folder)
        argv = build(folder, template.chain)
        # Every 6th trial dies early (before or just as its journal appears).
        if trial % 6 == 5:
            kills += _run_and_kill(argv, folder, wait_journal=False,
                                   delay=rng.uniform(0, timing.to_journal * 1.2))
        else:
            landed = _run_and_kill(argv, folder, wait_journal=True,
                                   delay=rng.uniform(0, scale * work))
            kills += landed
            # The machine's load changes how long a run takes: aim earlier after a miss.
            scale = min(0.9, scale * 1.1) if landed else scale * 0.6
        if not _journals(folder) and _without_run_litter(file_tree(folder)) == original:
            # Killed before its first journal landed: nothing changed, so run it again.
            _finish(_spawn(argv), f"{name} trial {trial}: re-run")
        for attempt in range(8):
            journals = _journals(folder)
            if not journals:
                break
            assert len(journals) == 1, journals
            resume = ["resume", journals[0]]
            if trial % 3 == 0 and attempt == 0:
                # Kill the resume too, somewhere in its run.
                kills += _run_and_kill(resume, folder, wait_journal=False,
                                       delay=timing.to_journal + rng.uniform(0, work))
            else:
                _finish(_spawn(resume), f"{name} trial {trial}: resume")
        assert not _journals(folder), f"{name} trial {trial}: journal left after resumes"
        # Every file, lock and temp journal included: a finished run leaves no litter.
        got = file_tree(folder)
        assert got == expected, (
            f"{name} trial {trial}: differs from the uninterrupted run: "
            f"{sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))}")
        shutil.rmtree(folder)
    assert kills >= MIN_KILLS, f"only {kills} kills landed while {name} was running"


def test_sigint_cancels_merge_and_chain_reads_as_before(tmp_path: Path,
                                                        template: Template) -> None:
    """Ctrl-C between chunks: exit 130, the journal gone, the chain reading as before."""
    for attempt in range(5):
        folder = tmp_path / f"attempt-{attempt}"
        shutil.copytree(template.folder, folder)
        proc = _spawn(_argv_merge(folder, template.chain))
        start = time.monotonic()
        while proc.poll() is None and not _journals(folder) and time.monotonic() - start < 60:
            time.sleep(0.0005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished before the signal: try again
            continue
        assert proc.returncode == 130, err.decode()
        assert b"vhdmend: error:" in err and b"Traceback" not in err
        assert not _journals(folder)
        newest = folder / template.chain[-1].name
        assert newest.exists()
        with vhdlib.open(newest) as disk:
            assert len(disk.layers) == len(template.chain)
            assert realimages.disk_sha256(disk) == template.content_sha256
        return
    pytest.fail("merge finished before SIGINT in every attempt")


def test_resume_refuses_changed_input(tmp_path: Path, template: Template) -> None:
    """A journal whose input changed since: exit 5, naming what changed."""
    folder = tmp_path / "changed"
    shutil.copytree(template.folder, folder)
    argv = _argv_convert(folder, template.chain)
    for _ in range(10):
        _run_and_kill(argv, folder, wait_journal=True, delay=0.0)
        if _journals(folder):
            break
        shutil.rmtree(folder)
        shutil.copytree(template.folder, folder)
    else:
        pytest.skip("convert never left a journal to resume")
    # Someone touched the newest input since (its mtime is part of its identity).
    newest = folder / template.chain[-1].name
    st = newest.stat()
    os.utime(newest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = run_cli("resume", _journals(folder)[0])
    assert r.code == 5, r.err
    assert "Traceback" not in r.err
    assert "changed" in r.err and "mtime" in r.err
