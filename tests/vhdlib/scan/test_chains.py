"""Grouping into chains as vhdlib.open resolves them, and every kind of broken chain."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, create
from vhdlib import scan
from vhdlib.errors import NotADiskError
from vhdlib.layer import DiskType

MiB = 1 << 20


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _chain(result: scan.ScanResult, leaf: Path) -> scan.ChainFigures:
    (chain,) = [c for c in result.chains if c.leaf == str(leaf)]
    return chain


@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_chains_are_grouped_as_vhdlib_open_resolves_them(tmp_path: Path, fmt: str) -> None:
    a = build_chain(_mk(tmp_path / "a"), fmt, size=8 * MiB, children=3, writes=4)
    b = build_chain(_mk(tmp_path / "b"), fmt, size=8 * MiB, children=0, writes=4)
    result = scan.scan([str(tmp_path)], reserve=0)
    assert len(result.chains) == 2
    for chain in (a, b):
        found = _chain(result, chain.newest)
        with vhdlib.open(str(chain.newest)) as disk:
            assert [f.path for f in found.layers] == [os.path.abspath(p) for p in disk.chain]
        assert found.snapshots == len(chain.paths) - 1
        assert found.problems == []
        # Only the leaf grows: older layers are frozen.
        assert found.growth_bytes == found.layers[0].growth_bytes > 0
    age = _chain(result, a.newest).oldest_snapshot_age(os.stat(a.base).st_mtime + 60)
    assert age == pytest.approx(60)
    assert _chain(result, b.newest).oldest_snapshot_age(0) is None


def test_a_disk_is_found_by_content_whatever_its_name(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhdx", size=8 * MiB, children=0, writes=2)
    os.rename(chain.base, tmp_path / "disk.bak")
    (tmp_path / "notes.txt").write_text("not a disk")
    result = scan.scan([str(tmp_path)], reserve=0)
    assert [c.leaf for c in result.chains] == [str(tmp_path / "disk.bak")]
    assert result.files_scanned == 2


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    build_chain(_mk(tmp_path / "real"), "vhd", size=8 * MiB, children=1, writes=2)
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink(tmp_path / "real" / "base.vhd", tmp_path / "link.vhd")
    result = scan.scan([str(tmp_path)], reserve=0)
    assert len(result.chains) == 1
    paths = [layer.path for c in result.chains for layer in c.layers]
    assert paths and not [p for p in paths if p.startswith(str(tmp_path / "link"))]


def test_missing_parent_is_a_problem_of_the_chain(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=8 * MiB, children=2, writes=2)
    os.unlink(chain.base)
    result = scan.scan([str(tmp_path)], reserve=0)
    found = _chain(result, chain.newest)
    assert [p.code for p in found.problems] == ["missing_parent"]
    assert len(found.layers) == 2  # the two children, then the link breaks
    assert result.has_problems


def test_a_parent_with_another_id_is_a_mismatch(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhdx", size=8 * MiB, children=1, writes=2)
    os.unlink(chain.base)
    create("vhdx", chain.base, 8 * MiB, DiskType.DYNAMIC).close()  # same name, new id
    result = scan.scan([str(tmp_path)], reserve=0)
    found = _chain(result, chain.newest)
    assert [p.code for p in found.problems] == ["id_mismatch"]
    # The impostor stands alone (nobody resolves to it).
    assert _chain(result, chain.base).problems == []


def test_a_loop_is_reported(tmp_path: Path) -> None:
    # b's parent is a; a is made a differencing disk whose parent is b (a VHD child of b
    # given a's footer id), so following the links from either comes back round.
    from vhdlib.formats import open_layer
    a = create("vhd", tmp_path / "a.vhd", 8 * MiB, DiskType.DYNAMIC)
    b = create("vhd", tmp_path / "b.avhd", None, DiskType.DIFFERENCING, parent=a)
    c = create("vhd", tmp_path / "c.avhd", None, DiskType.DIFFERENCING, parent=b)
    a_id = a.link_id
    for layer in (a, b, c):
        layer.close()
    with open_layer(str(tmp_path / "c.avhd"), writable=True) as layer:
        layer.set_unique_id(a_id)  # type: ignore[attr-defined]
    os.replace(tmp_path / "c.avhd", tmp_path / "a.vhd")
    with pytest.raises(vhdlib.ChainError):
        vhdlib.open(str(tmp_path / "b.avhd"))
    result = scan.scan([str(tmp_path)], reserve=0)
    assert len(result.chains) == 1
    (chain,) = result.chains
    assert [p.code for p in chain.problems] == ["loop"]
    assert sorted(f.path for f in chain.layers) == [str(tmp_path / "a.vhd"),
                                                    str(tmp_path / "b.avhd")]


def test_journal_of_an_interrupted_operation_is_a_problem(tmp_path: Path) -> None:
    from vhdlib import journal, ops
    chain = build_chain(tmp_path, "vhd", size=8 * MiB, children=1, writes=2)
    op = ops.prepare("remediate", str(chain.newest), type="fixed")
    journal.save(op.journal_path, {**op.state.to_dict(), "phase": "copy"})
    result = scan.scan([str(tmp_path)], reserve=0)
    found = _chain(result, chain.newest)
    assert [p.code for p in found.problems] == ["interrupted"]
    assert op.journal_path in found.problems[0].message


def test_unreadable_files_and_folders_are_reported_not_fatal(tmp_path: Path) -> None:
    build_chain(_mk(tmp_path / "ok"), "vhd", size=8 * MiB, children=0, writes=2)
    (tmp_path / "bad.avhdx").write_bytes(b"vhdxfile" + bytes(4096))
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x.vhd").write_bytes(b"")
    os.chmod(locked, 0)
    try:
        result = scan.scan([str(tmp_path)], reserve=0)
    finally:
        os.chmod(locked, 0o755)
    bad = _chain(result, tmp_path / "bad.avhdx")
    assert [p.code for p in bad.problems] == ["unreadable"]
    if os.geteuid() != 0:  # root reads a mode-0 folder anyway
        assert str(locked) in result.unreadable
    assert any(c.leaf.endswith("base.vhd") and not c.problems for c in result.chains)


def test_an_unreadable_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NotADiskError):
        scan.scan([str(tmp_path / "nope")])


def test_archived_chains_do_not_count_as_growth(tmp_path: Path) -> None:
    chain = build_chain(_mk(tmp_path / "vhdmend-archive-1234"), "vhd", size=8 * MiB, children=1,
                        writes=2)
    result = scan.scan([str(tmp_path)], reserve=0)
    found = _chain(result, chain.newest)
    assert found.archived and found.growth_bytes == 0
    assert found.layers[0].growth_bytes > 0
    assert json.dumps(result.to_dict())


def test_holders_are_the_in_use_guards_view(tmp_path: Path) -> None:
    from tests.vhdlib.inuse.holders import holding
    chain = build_chain(tmp_path, "vhd", size=4 * MiB, children=1, writes=2)
    # Given nobody holds the chain, the scan names nobody.
    assert _chain(scan.scan([str(tmp_path)], reserve=0), chain.newest).holders == []
    # When a real process holds the base open, the chain's holders name that process.
    with holding(chain.paths[0], "rb") as proc:
        found = _chain(scan.scan([str(tmp_path)], reserve=0), chain.newest).holders
    assert [h["pid"] for h in found] == [proc.pid]
    assert found[0]["mode"] == "read"
