"""merge: Merge-VHD semantics in one pass, children retired, dependents protected."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, read_all
from vhdlib import ops
from vhdlib.errors import DependentChildrenError, UsageError
from vhdlib.formats import open_layer


def test_merge_into_base_collapses_all_levels(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt)
    op = ops.prepare("merge", str(chain.newest), into=str(chain.base))
    assert op.plan.details["levels"] == 3
    result = op.run()
    assert result["status"] == "done"
    with vhdlib.open(str(chain.base)) as disk:
        assert len(disk.layers) == 1
        assert disk.read(0, disk.virtual_size) == chain.ref
    # Merged children are retired into the archive, not left looking valid.
    for child in chain.paths[1:]:
        assert not child.exists()
        assert (Path(result["archive"]) / child.name).exists()


def test_merge_default_is_immediate_parent(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt)
    op = ops.prepare("merge", str(chain.newest), delete=True)
    assert op.plan.details["levels"] == 1
    op.run()
    parent = chain.paths[-2]
    assert not chain.newest.exists()
    assert read_all(parent) == chain.ref
    with vhdlib.open(str(parent)) as disk:
        assert len(disk.layers) == 3


def test_each_sector_written_once(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd")
    op = ops.prepare("merge", str(chain.newest), into=str(chain.base))
    # The plan writes the union of what the children define, not the sum per level.
    from vhdlib.extents import ExtentKind
    with vhdlib.open(str(chain.newest)) as disk:
        union = sum(e.length for e in disk.extents(levels=3)
                    if e.kind is not ExtentKind.UNALLOCATED)
    per_level = sum(n for layer, _, n in chain.writes if layer > 0)
    assert op.plan.steps[0].write_bytes == union
    assert union < per_level


def test_merge_refuses_dependent_children(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", children=2)
    # Another snapshot branch hangs off the base.
    from tests.chains import create
    from vhdlib.layer import DiskType
    with open_layer(str(chain.base)) as base:
        create("vhd", tmp_path / "branch.avhd", None, DiskType.DIFFERENCING, parent=base).close()
    before = {p: p.read_bytes() for p in chain.paths}
    with pytest.raises(DependentChildrenError, match=r"branch\.avhd") as info:
        ops.prepare("merge", str(chain.newest), into=str(chain.base))
    assert info.value.exit_code == 5
    assert {p: p.read_bytes() for p in chain.paths} == before
    # --force overrides
    ops.prepare("merge", str(chain.newest), into=str(chain.base), force=True).run()
    assert read_all(chain.base) == chain.ref


def test_merge_refuses_non_ancestor(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", children=1, size=8 << 20)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(chain.base, other / "x.vhd")
    with pytest.raises(UsageError, match="not an ancestor"):
        ops.prepare("merge", str(chain.newest), into=str(other / "x.vhd"))
    with pytest.raises(UsageError, match="nothing to merge"):
        ops.prepare("merge", str(chain.base))


def test_cancelled_merge_leaves_chain_reading_as_before(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, writes=60)
    op = ops.prepare("merge", str(chain.newest), into=str(chain.base))
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return True

    with pytest.raises(vhdlib.Cancelled):
        op.run(cancel=cancel, chunk_bytes=64 << 10)
    assert calls["n"] == 1
    assert all(p.exists() for p in chain.paths)
    assert read_all(chain.newest) == chain.ref
    assert not os.path.exists(str(chain.base) + ".vhdmend.json")


def test_archived_children_no_longer_resolve_to_the_merged_ancestor(tmp_path: Path,
                                                                     fmt: str) -> None:
    # Given a chain merged into its base, children archived
    chain = build_chain(tmp_path, fmt)
    result = ops.prepare("merge", str(chain.newest), into=str(chain.base)).run()
    archived = Path(result["archive"]) / chain.newest.name
    # Then an archived child cannot read through the changed base (its locators still
    # point there): a typed error instead of a chain mixing old and merged data.
    with pytest.raises(vhdlib.ChainError):
        vhdlib.open(str(archived))
    assert read_all(chain.base) == chain.ref
