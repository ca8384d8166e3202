"""remediate: the whole manual cure (3 merges + compact + convert) in one pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, file_sha256, read_all
from vhdlib import ops
from vhdlib.errors import InsufficientSpaceError, UsageError


def test_remediate_swaps_in_a_fixed_disk_and_archives_the_chain(tmp_path: Path,
                                                                 fmt: str) -> None:
    chain = build_chain(tmp_path, fmt)
    originals = {p.name: file_sha256(p) for p in chain.paths}
    op = ops.prepare("remediate", str(chain.newest))
    assert [s.name for s in op.plan.steps][-1] == "swap"
    result = op.run()
    # The result takes the base disk's name: one fixed disk with the chain's content.
    assert result["output"] == str(chain.base)
    with vhdlib.open(str(chain.base)) as disk:
        assert len(disk.layers) == 1
        assert disk.top.disk_type.value == "fixed"
        assert disk.read(0, disk.virtual_size) == chain.ref
    assert os.stat(chain.base).st_blocks * 512 >= len(chain.ref)  # allocated
    # The snapshots are gone from the folder; the archive holds the old chain intact.
    for child in chain.paths[1:]:
        assert not child.exists()
    archive = Path(result["archive"])
    assert {p.name: file_sha256(archive / p.name) for p in chain.paths} == originals
    assert read_all(archive / chain.newest.name) == chain.ref  # still a valid chain there


def test_remediate_with_output_leaves_chain(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd")
    originals = {p: file_sha256(p) for p in chain.paths}
    out = tmp_path / "out" / "new.vhd"
    out.parent.mkdir()
    ops.prepare("remediate", str(chain.newest), str(out), type="dynamic").run()
    assert read_all(out) == chain.ref
    assert {p: file_sha256(p) for p in chain.paths} == originals


def test_remediate_delete(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", children=2)
    result = ops.prepare("remediate", str(chain.newest), delete=True).run()
    assert "archive" not in result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.vhd"]
    assert read_all(chain.base) == chain.ref


def test_remediate_shrinks_a_bloated_chain(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=32 << 20)
    before = sum(os.path.getsize(p) for p in chain.paths)
    ops.prepare("remediate", str(chain.newest), type="dynamic", delete=True).run()
    assert os.path.getsize(chain.base) < before


def test_free_space_checked_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    chain = build_chain(tmp_path, "vhd", size=16 << 20, children=1)
    from vhdlib import space
    real = space.volume_of

    def tiny(path: str) -> space.Volume:
        v = real(path)
        return space.Volume(v.device, v.path, v.block_size, 1 << 20)

    monkeypatch.setattr(space, "volume_of", tiny)
    op = ops.prepare("remediate", str(chain.newest))
    need = op.plan.space[0]["needed_bytes"]
    assert need >= 16 << 20
    assert op.plan.to_dict()["space_ok"] is False
    with pytest.raises(InsufficientSpaceError) as info:
        op.run()
    assert str(need) in str(info.value) and str(1 << 20) in str(info.value)
    assert info.value.exit_code == 4
    # Nothing was written: no partial output, no journal.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in chain.paths)


def test_remediate_refuses_when_journal_exists(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=8 << 20, children=1)
    Path(str(chain.base) + ".vhdmend.json").write_text("{}")
    op = ops.prepare("remediate", str(chain.newest))
    with pytest.raises(vhdlib.SafetyRefusal, match="resume"):
        op.run()


def test_remediate_argument_errors(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=8 << 20, children=1)
    with pytest.raises(UsageError):
        ops.prepare("remediate", str(chain.newest), archive=str(tmp_path), delete=True)
    with pytest.raises(UsageError):
        ops.prepare("remediate", str(chain.newest), bogus=1)


def test_remediate_refuses_when_another_branch_depends_on_the_chain(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", children=2)
    from tests.chains import create
    from vhdlib.formats import open_layer
    from vhdlib.layer import DiskType
    with open_layer(str(chain.paths[1])) as middle:
        create("vhd", tmp_path / "branch.avhd", None, DiskType.DIFFERENCING,
               parent=middle).close()
    before = {p.name: file_sha256(p) for p in chain.paths}
    with pytest.raises(vhdlib.errors.DependentChildrenError, match=r"branch\.avhd"):
        ops.prepare("remediate", str(chain.newest))
    assert {p.name: file_sha256(p) for p in chain.paths} == before
    # --output leaves the chain (and the branch) in place: allowed
    out = tmp_path / "flat.vhd"
    ops.prepare("remediate", str(chain.newest), str(out)).run()
    assert read_all(out) == chain.ref
    assert read_all(tmp_path / "branch.avhd") is not None
    # --force goes ahead
    ops.prepare("remediate", str(chain.newest), force=True).run()
    assert read_all(chain.base) == chain.ref
