"""Every writing command refuses a chain another process holds open, changing nothing;
once the holder lets go, the same command succeeds (issue 8: the in-use guard)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chains import build_chain
from tests.vhdlib.inuse.holders import holding
from tests.vhdmend.helpers import assert_clean_error, file_tree, run_cli
from vhdlib import ops
from vhdlib.errors import FileInUseError

MiB = 1 << 20

#: command -> (argv, does a read-only holder block it?)
Argv = Callable[[Path, list[Path]], list[object]]
COMMANDS: dict[str, tuple[Argv, bool]] = {
    "merge": (lambda d, c: ["merge", c[-1], "--archive", d / "archive"], True),
    "compact": (lambda d, c: ["compact", c[-1]], True),
    "remediate": (lambda d, c: ["remediate", c[-1], "--archive", d / "archive"], True),
    "remediate-output": (lambda d, c: ["remediate", c[-1], "--output", d / "out.vhd"], False),
    "convert": (lambda d, c: ["convert", c[-1], d / "out.vhd", "--type", "dynamic"], False),
}


def _chain(folder: Path) -> list[Path]:
    return build_chain(folder, size=8 * MiB, children=2, writes=12).paths


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("mode", ["rb", "r+b"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_refused_while_held_then_succeeds(tmp_path: Path, command: str,
                                                  mode: str) -> None:
    argv, reader_blocks = COMMANDS[command]
    chain = _chain(tmp_path)
    # Hold the file the command writes for in-place commands (the newest for compact),
    # a parent layer for the others: every file of the chain counts.
    held = chain[-1] if command == "compact" else chain[1]
    before, listing = file_tree(tmp_path), _listing(tmp_path)
    blocks = mode == "r+b" or reader_blocks
    with holding(held, mode) as proc:
        r = run_cli(*argv(tmp_path, chain))
        if blocks:
            assert_clean_error(r, 5)
            assert str(held) in r.err and f"pid {proc.pid}" in r.err, r.err
            assert ("write" if mode == "r+b" else "read") in r.err
            assert "kernel lease" in r.err  # which method answered
            assert file_tree(tmp_path) == before and _listing(tmp_path) == listing
        else:
            assert r.code == 0, r.err
    if blocks:
        r = run_cli(*argv(tmp_path, chain))
        assert r.code == 0, r.err
        assert file_tree(tmp_path) != before


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_remediate_refused_whichever_layer_is_held(tmp_path: Path, layer: int) -> None:
    chain = _chain(tmp_path)
    before = file_tree(tmp_path)
    with holding(chain[layer], "rb"):
        r = run_cli("remediate", chain[-1], "--json")
    assert_clean_error(r, 5)
    assert str(chain[layer]) in r.err
    assert file_tree(tmp_path) == before


def _paused_remediation(folder: Path) -> tuple[list[Path], str]:
    chain = _chain(folder)
    op = ops.prepare("remediate", str(chain[-1]), archive=str(folder / "archive"))
    assert op.run(pause=lambda: True, chunk_bytes=1 * MiB)["status"] == "paused"
    return chain, op.journal_path


@pytest.mark.parametrize("mode", ["rb", "r+b"])
def test_resume_refused_while_held_then_succeeds(tmp_path: Path, mode: str) -> None:
    chain, journal = _paused_remediation(tmp_path)
    before, listing = file_tree(tmp_path), _listing(tmp_path)
    with holding(chain[0], mode) as proc:
        r = run_cli("resume", journal)
    assert_clean_error(r, 5)
    assert f"pid {proc.pid}" in r.err and f"vhdmend resume {journal}" in r.err, r.err
    assert file_tree(tmp_path) == before and _listing(tmp_path) == listing
    r = run_cli("resume", journal)
    assert r.code == 0, r.err
    assert not os.path.exists(journal)
    assert re.search(r"in use check: +kernel lease", r.out), r.out


def test_swap_refused_when_a_holder_appears_after_the_copy(tmp_path: Path) -> None:
    """The last look before the swap: a file opened after the start check (here by the
    before-irreversible hook) is still refused; the journal stays and resume finishes
    once the file is closed."""
    chain = _chain(tmp_path)
    op = ops.prepare("remediate", str(chain[-1]), archive=str(tmp_path / "archive"))
    originals = {p: p.read_bytes() for p in chain}
    with contextlib.ExitStack() as stack:
        procs: list[subprocess.Popen[str]] = []

        def open_it(step: str) -> None:
            assert step == "swap"
            procs.append(stack.enter_context(holding(chain[0], "rb")))

        with pytest.raises(FileInUseError) as ei:
            op.run(before_irreversible=open_it)
        assert f"pid {procs[0].pid}" in str(ei.value) and "swap" in str(ei.value)
    assert {p: p.read_bytes() for p in chain} == originals
    assert not (tmp_path / "archive").exists()
    assert os.path.exists(op.journal_path)
    res = ops.resume(op.journal_path).run()
    assert res["status"] == "done" and not chain[1].exists()


def test_merge_retire_refused_when_a_holder_appears(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    op = ops.prepare("merge", str(chain[-1]), archive=str(tmp_path / "archive"))
    with contextlib.ExitStack() as stack:
        def open_it(step: str) -> None:
            assert step == "retire"
            stack.enter_context(holding(chain[-1], "rb"))

        with pytest.raises(FileInUseError, match="refusing to retire"):
            op.run(before_irreversible=open_it)
    assert all(p.exists() for p in chain) and not (tmp_path / "archive").exists()
    assert ops.resume(op.journal_path).run()["status"] == "done"
    assert not chain[-1].exists()
