"""Crash tests: SIGKILL the CLI at random instants of every operation, resume, compare.

For each operation a reference run goes uninterrupted; then, in fresh copies of the same
inputs, the same command is killed with SIGKILL at a seeded random instant, ``vhdmend
resume JOURNAL`` finishes it (and is itself killed in every third trial), and every file
left in the folder must be bit-identical to the reference run's. The kills are aimed, not
spread blindly: ``REPEATS`` trials die early (before or just as the journal appears) and
``REPEATS`` at a random instant inside each phase the reference run's journal recorded
(``done`` included), and every phase of at least ``LONG_PHASE`` must have had a kill land
in it (the killed run's journal names it). ``VHDMEND_CHUNK_BYTES`` makes checkpoints
frequent so kills land between and inside many chunks.

The reference runs ``python -m vhdmend`` as a user would; the trials' runs are children
forked from this process after ``vhdmend`` is imported (real processes, killed by the
kernel and leaving what ``kill -9`` leaves), because a fresh interpreter's ~0.5 s start-up
was most of each run, three runs a trial. A forked uninterrupted run must match the
reference too, so the two ways of starting the CLI cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
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
from tests.vhdmend.helpers import Forked, cli_argv, cli_env, file_tree, run_cli
from vhdlib import demo
from vhdlib.ops.compact import CompactOperation
from vhdlib.ops.convert import ConvertOperation
from vhdlib.ops.merge import MergeOperation
from vhdlib.ops.operation import DONE
from vhdlib.ops.remediate import RemediateOperation

pytestmark = pytest.mark.slow

#: Trials per kill target (early, and each phase the reference run's journal recorded).
REPEATS = 2
MAX_TRIALS = 60
#: A phase at least this long (in the forked reference run) must get a kill landed in it.
LONG_PHASE = 0.02
SIZE = 12 << 20
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

#: operation -> its phases, in order (``done`` follows the last).
PHASES: dict[str, tuple[str, ...]] = {
    "merge": MergeOperation.phases,
    "compact": CompactOperation.phases,
    "convert": ConvertOperation.phases,
    "remediate": RemediateOperation.phases,
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


def _popen(argv: list[object]) -> subprocess.Popen[bytes]:
    """``python -m vhdmend ARGV`` in a fresh interpreter."""
    return subprocess.Popen(cli_argv(*argv), env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


Proc = subprocess.Popen[bytes] | Forked


def _spawn(argv: list[object]) -> Forked:
    return Forked(argv, _env())


def _finish(proc: Proc, what: str) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}: {err.decode()}"


def _phase(folder: Path) -> str | None:
    """The phase the journal in ``folder`` records (None: no journal yet)."""
    for path in _journals(folder):
        # Journals are replaced by rename, never rewritten in place: a read is whole.
        with contextlib.suppress(FileNotFoundError):
            phase = json.loads(path.read_text()).get("phase")
            return str(phase) if phase is not None else None
    return None


def _run_and_kill(argv: list[object], folder: Path, *, after: str | None, delay: float,
                  order: tuple[str, ...] = ()) -> bool:
    """Start ``vhdmend ARGV``; SIGKILL it ``delay`` s after start or, given ``after``,
    ``delay`` s after its journal first records that phase or one later in ``order``.
    Returns True when the kill landed (the process was still running)."""
    proc = _spawn(argv)
    start = time.monotonic()
    if after is not None:
        while proc.poll() is None and time.monotonic() - start < 60:
            now = _phase(folder)
            if now is not None and order.index(now) >= order.index(after):
                break
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
    #: Each phase the journal recorded -> (first seen, the next one first seen or the
    #: journal gone), in seconds after start.
    windows: dict[str, tuple[float, float]]


def _timed_run(folder: Path, proc: Proc, what: str) -> Timing:
    """Wait for ``proc`` to finish; when its journal appeared and each phase began."""
    start = time.monotonic()
    to_journal = None
    seen: dict[str, float] = {}
    gone = None  # when the journal was removed (the run's last step before its exit)
    while proc.poll() is None:
        phase = _phase(folder)
        now = time.monotonic() - start
        if phase is not None:
            to_journal = now if to_journal is None else to_journal
            seen.setdefault(phase, now)
        elif seen and gone is None:
            gone = now
        time.sleep(0.0005)
    total = time.monotonic() - start
    _finish(proc, what)
    starts = sorted(seen.items(), key=lambda kv: kv[1])
    ends = [t for _, t in starts[1:]] + [gone or total]
    windows = {name: (t, end) for (name, t), end in zip(starts, ends, strict=True)}
    return Timing(to_journal or total * 0.5, total, windows)


def _reference(tmp_path: Path, template: Template, name: str) -> tuple[dict[str, str], Timing]:
    """The uninterrupted ``python -m vhdmend`` run's folder, and the timing of a forked
    uninterrupted run (the trials' kind), whose folder must be the same."""
    build, _ = OPERATIONS[name]
    ref = tmp_path / "reference"
    shutil.copytree(template.folder, ref)
    _timed_run(ref, _popen(build(ref, template.chain)), f"reference {name}")
    expected = file_tree(ref)
    forked = tmp_path / "forked-reference"
    shutil.copytree(template.folder, forked)
    timing = _timed_run(forked, _spawn(build(forked, template.chain)), f"forked {name}")
    assert file_tree(forked) == expected, f"{name}: a forked run differs from python -m"
    shutil.rmtree(forked)
    return expected, timing


def _result_file(folder: Path, template: Template, which: str) -> Path:
    return folder / (template.chain[-1].name if which == "newest" else which)


def _schedule(timing: Timing) -> list[str | None]:
    """The trials' kill targets: ``None`` dies early (before or just as its journal
    appears); a phase dies at a random instant of it (``done`` included: the result is
    worked out while the journal still exists). Each target ``REPEATS`` times."""
    return [t for _ in range(REPEATS) for t in (None, *timing.windows)]


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_kill_resume_bit_identical(tmp_path: Path, template: Template, name: str) -> None:
    build, result_name = OPERATIONS[name]
    order = (*PHASES[name], DONE)
    expected, timing = _reference(tmp_path, template, name)
    assert not any(k.endswith(".vhdmend.json") for k in expected)
    assert set(timing.windows) <= set(order), timing.windows
    # The reference result reads exactly as the chain did.
    with vhdlib.open(_result_file(tmp_path / "reference", template, result_name)) as disk:
        assert realimages.disk_sha256(disk) == template.content_sha256
    work = max(timing.total - timing.to_journal, 0.05)
    original = file_tree(template.folder)
    # The phases long enough that a kill inside each must have landed (shorter ones are
    # aimed at too, but a poll may see them only once they are over).
    long_phases = {p for p, (a, b) in timing.windows.items() if b - a >= LONG_PHASE}
    schedule = _schedule(timing)

    kills = 0
    killed_in: set[str] = set()
    trial = -1
    # Every scheduled trial, and more (up to MAX_TRIALS, aimed at a long phase no kill
    # landed in yet) until a kill landed in each long phase and at least one kill per
    # scheduled trial landed while the CLI was running (resumes are killed too).
    while trial + 1 < len(schedule) or (
            (kills < len(schedule) or long_phases - killed_in) and trial + 1 < MAX_TRIALS):
        trial += 1
        rng = random.Random(f"{name}-{trial}")
        missing = sorted(long_phases - killed_in, key=order.index)
        target = (schedule[trial] if trial < len(schedule)
                  else missing[0] if missing else schedule[trial % len(schedule)])
        folder = tmp_path / f"trial-{trial}"
        shutil.copytree(template.folder, folder)
        argv = build(folder, template.chain)
        if target is None:
            kills += _run_and_kill(argv, folder, after=None,
                                   delay=rng.uniform(0, timing.to_journal * 1.2))
        else:
            begin, end = timing.windows[target]
            # An extra trial, chasing a phase the kills missed, aims at its first third.
            reach = 0.9 if trial < len(schedule) else 0.3
            if _run_and_kill(argv, folder, after=target, order=order,
                             delay=rng.uniform(0, reach * (end - begin))):
                kills += 1
                left = _phase(folder)
                if left is not None:
                    killed_in.add(left)
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
                kills += _run_and_kill(resume, folder, after=None,
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
    assert kills >= len(schedule), f"only {kills} kills landed while {name} was running"
    assert killed_in >= long_phases, f"{name}: no kill landed in {long_phases - killed_in}"


def test_sigint_cancels_merge_and_chain_reads_as_before(tmp_path: Path,
                                                        template: Template) -> None:
    """Ctrl-C between chunks: exit 130, the journal gone, the chain reading as before."""
    for attempt in range(5):
        folder = tmp_path / f"attempt-{attempt}"
        shutil.copytree(template.folder, folder)
        proc = _popen(_argv_merge(folder, template.chain))
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
        # Killed as soon as its journal records any phase.
        _run_and_kill(argv, folder, after=PHASES["convert"][0],
                      order=(*PHASES["convert"], DONE), delay=0.0)
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
