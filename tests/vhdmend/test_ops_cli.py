"""The operation commands end to end: --plan, results, and the refusal exit codes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import vhdlib
from tests import realimages
from tests.vhdlib.ops.test_volumes import volume  # noqa: F401 - a fixture (tmpfs)
from tests.vhdmend.helpers import assert_clean_error, file_tree, run_cli
from vhdlib import demo

SIZE = 8 << 20
BLOCK = 256 << 10


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], str]:
    folder = tmp_path_factory.mktemp("ops-cli")
    chain = demo.make_bloated_chain(folder, size=SIZE, block_size=BLOCK, seed=3)
    with vhdlib.open(chain[-1]) as disk:
        sha = realimages.disk_sha256(disk)
    return folder, chain, sha


@pytest.fixture
def chain(tmp_path: Path, pristine: tuple[Path, list[Path], str]) -> list[Path]:
    """A writable copy of the demo chain, oldest first."""
    folder, paths, _ = pristine
    shutil.copytree(folder, tmp_path / "c")
    return [tmp_path / "c" / p.name for p in paths]


def _content(path: Path) -> str:
    with vhdlib.open(path) as disk:
        return realimages.disk_sha256(disk)


@pytest.mark.parametrize("op", ["merge", "compact", "convert", "remediate"])
def test_plan_writes_nothing(chain: list[Path], op: str) -> None:
    folder = chain[0].parent
    argv: list[object] = {
        "merge": ["merge", chain[-1], "--into", chain[0]],
        "compact": ["compact", chain[0]],
        "convert": ["convert", chain[-1], folder / "out.vhd"],
        "remediate": ["remediate", chain[-1]],
    }[op]
    before = file_tree(folder)
    r = run_cli(*argv, "--plan", "--json")
    assert r.code == 0, r.err
    plan = r.json()
    assert plan["operation"] == op
    assert plan["steps"] and all("name" in s for s in plan["steps"])
    assert plan["space"] and all(v["needed_bytes"] >= 0 for v in plan["space"])
    r = run_cli(*argv, "--plan")
    assert r.code == 0 and "dry run" in r.out and "space on" in r.out
    assert file_tree(folder) == before


def test_merge_into_base_then_chain_reads_the_same(chain: list[Path],
                                                   pristine: tuple[Path, list[Path], str]):
    archive = chain[0].parent / "archive"
    r = run_cli("merge", chain[-1], "--into", chain[0], "--archive", archive, "--json")
    assert r.code == 0, r.err
    assert r.json()["status"] == "done"
    # The merged children are retired: gone from the folder, kept in the archive.
    assert not any(p.exists() for p in chain[1:])
    assert sorted(p.name for p in archive.iterdir()) == sorted(p.name for p in chain[1:])
    assert _content(chain[0]) == pristine[2]


def test_merge_refuses_dependents_unless_forced(chain: list[Path]) -> None:
    # Given another snapshot branching off the middle of the chain
    sibling = chain[0].parent / "sibling.avhd"
    assert run_cli("create", sibling, "--type", "differencing", "--parent", chain[1]).code == 0
    before = file_tree(chain[0].parent)
    # When merging the newest into the base, the base and chain[1] would change: refused
    r = run_cli("merge", chain[-1], "--into", chain[0], "--delete")
    assert_clean_error(r, 5)
    assert "sibling.avhd" in r.err
    assert file_tree(chain[0].parent) == before
    r = run_cli("merge", chain[-1], "--into", chain[0], "--delete", "--json")
    assert r.code == 5
    assert r.json()["error"]["type"] == "dependent_children"
    # --force overrides
    r = run_cli("merge", chain[-1], "--into", chain[0], "--delete", "--force", "-q")
    assert r.code == 0, r.err


def test_remediate_output_leaves_chain(chain: list[Path],
                                       pristine: tuple[Path, list[Path], str]) -> None:
    folder = chain[0].parent
    before = file_tree(folder)
    out = folder.parent / "result.vhd"
    r = run_cli("remediate", chain[-1], "--output", out, "--type", "dynamic", "-q")
    assert r.code == 0, r.err
    assert r.err == ""  # --quiet: no progress, no notes
    assert file_tree(folder) == before
    assert _content(out) == pristine[2]
    info = run_cli("info", out, "--json").json()
    assert info["type"] == "dynamic" and len(info["chain"]) == 1


def test_compact_shrinks_and_keeps_content(chain: list[Path],
                                           pristine: tuple[Path, list[Path], str]) -> None:
    size = chain[0].stat().st_size
    r = run_cli("compact", chain[0])
    assert r.code == 0, r.err
    assert chain[0].stat().st_size < size
    assert _content(chain[-1]) == pristine[2]


def test_compact_fixed_is_usage_error(real_image, tmp_path: Path) -> None:
    path = realimages.scratch_copy("dissect.hypervisor/fixed.vhd", tmp_path)
    assert_clean_error(run_cli("compact", path), 2)


def test_operation_in_progress_is_exit_5(chain: list[Path]) -> None:
    journal = Path(str(chain[0]) + ".vhdmend.json")
    journal.write_text("{}")
    assert_clean_error(run_cli("compact", chain[0]), 5)


@pytest.mark.parametrize("content", [None, "not json", '{"journal_version": 99}'])
def test_resume_bad_journal_is_exit_3(tmp_path: Path, content: str | None) -> None:
    journal = tmp_path / "x.vhd.vhdmend.json"
    if content is not None:
        journal.write_text(content)
    assert_clean_error(run_cli("resume", journal), 3)


def test_not_enough_space_is_exit_4(chain: list[Path], volume) -> None:  # noqa: F811
    small = volume("small", 2)
    r = run_cli("convert", chain[-1], small / "out.vhd", "--type", "fixed")
    assert_clean_error(r, 4)
    # Names both numbers: what it needs (at least the disk) and what the volume has.
    numbers = [int(n) for n in re.findall(r"\d{6,}", r.err)]
    assert any(n >= SIZE for n in numbers) and any(n <= 2 << 20 for n in numbers), r.err
    assert list(small.iterdir()) == []
