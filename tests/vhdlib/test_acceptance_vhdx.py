"""Acceptance checks of the VHDX issue that other tests leave open or assert too loosely.

Peers: qemu-img (``check`` and reads of dynamic/fixed VHDX) and libvhdi (chains).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, read_all
from tests.conftest import require_tool
from vhdlib import journal, ops, vhdx
from vhdlib.errors import DependentChildrenError, ParentMismatchError, UsageError
from vhdlib.formats import open_layer
from vhdlib.layer import DiskType

MIB = 1 << 20
GIB = 1 << 30


def _qemu_check(path: Path) -> None:
    qemu = require_tool("qemu-img")
    r = subprocess.run([qemu, "check", "-f", "vhdx", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No errors" in r.stdout, r.stdout


def _qemu_raw(path: Path) -> bytes:
    qemu = require_tool("qemu-img")
    out = path.with_name(path.name + ".raw")
    subprocess.run([qemu, "convert", "-f", "vhdx", "-O", "raw", str(path), str(out)],
                   check=True)
    try:
        return out.read_bytes()
    finally:
        out.unlink()


# Requirement (issue 3, Operations): convert to VHD refuses a VHDX larger than the VHD
# limit (2040 GiB) with a clear error, before writing anything.
def test_vhd_limit_refused_for_a_larger_vhdx(tmp_path: Path) -> None:
    big = tmp_path / "big.vhdx"
    layer = vhdx.create(big, 2041 * GIB, "dynamic")
    layer.write(0, b"\x11" * 4096)
    layer.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UsageError, match="2040 GiB") as ei:
        ops.prepare("convert", str(big), str(tmp_path / "big.vhd"), format="vhd")
    assert "VHDX" in str(ei.value)
    with pytest.raises(UsageError, match="2040 GiB"):
        ops.prepare("remediate", str(big), output=str(tmp_path / "r.vhd"), format="vhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # Just under the limit is fine (dynamic: no space needed for the virtual size).
    ok = tmp_path / "ok.vhdx"
    vhdx.create(ok, 2040 * GIB, "dynamic").close()
    op = ops.prepare("convert", str(ok), str(tmp_path / "ok.vhd"), format="vhd",
                     type="dynamic")
    assert op.plan.to_dict()["operation"] == "convert"


# Requirement (issue 3): 4096-byte logical sectors preserved on conversion where the
# target allows (VHDX), and libvhdi reads the result as we do.
@pytest.mark.parametrize("out_type", ["dynamic", "fixed"])
def test_4k_sectors_preserved_by_convert_and_remediate(tmp_path: Path, out_type: str) -> None:
    base = vhdx.create(tmp_path / "base.vhdx", 32 * MIB, "dynamic", logical_sector_size=4096)
    base.write(0, b"b" * 16384)
    child = vhdx.create(tmp_path / "s1.avhdx", 32 * MIB, "differencing", parent=base,
                        logical_sector_size=4096)
    child.write(4096, b"c" * 4096)
    child.write_zeroes(8192, 4096)
    base.close()
    child.close()
    expected = b"b" * 4096 + b"c" * 4096 + bytes(4096) + b"b" * 4096
    out = tmp_path / f"conv-{out_type}.vhdx"
    ops.prepare("convert", str(tmp_path / "s1.avhdx"), str(out), type=out_type).run()
    with vhdlib.open(out) as disk:
        assert disk.logical_sector_size == 4096
        assert disk.read(0, 16384) == expected
    # qemu-img refuses 4096-byte logical sectors ("Operation not supported"); libvhdi reads.
    pyvhdi = pytest.importorskip("pyvhdi")
    f = pyvhdi.file()
    f.open(str(out))
    try:
        assert bytes(f.read_buffer_at_offset(16384, 0)) == expected
    finally:
        f.close()
    rem = tmp_path / f"rem-{out_type}.vhdx"
    ops.prepare("remediate", str(tmp_path / "s1.avhdx"), output=str(rem), type=out_type).run()
    with vhdlib.open(rem) as disk:
        assert disk.logical_sector_size == 4096
        assert disk.read(0, 16384) == expected
    # The 512-only VHD target refuses instead of silently changing the sector size.
    with pytest.raises(UsageError, match="512"):
        ops.prepare("convert", str(tmp_path / "s1.avhdx"), str(tmp_path / "x.vhd"))


# Requirement (issue 3, Writing): qemu-img check finds no errors in what we write, also
# after the operations that rewrite a VHDX in place (merge, compact), and qemu-img reads
# the result as we do.
def test_qemu_check_clean_after_merge_and_compact(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhdx", size=64 * MIB, writes=8, zero_blocks=3,
                        block_size=2 * MIB)
    ops.prepare("merge", str(chain.newest), into=str(chain.base), delete=True).run()
    _qemu_check(chain.base)
    assert _qemu_raw(chain.base) == bytes(chain.ref)
    size = chain.base.stat().st_size
    ops.prepare("compact", str(chain.base)).run()
    assert chain.base.stat().st_size < size
    _qemu_check(chain.base)
    assert _qemu_raw(chain.base) == bytes(chain.ref)
    assert read_all(chain.base) == chain.ref


@pytest.mark.parametrize("out_type", ["dynamic", "fixed"])
def test_qemu_check_clean_on_convert_and_remediate_outputs(tmp_path: Path,
                                                           out_type: str) -> None:
    chain = build_chain(tmp_path, "vhdx", size=16 * MIB, children=2)
    out = tmp_path / "out.vhdx"
    ops.prepare("convert", str(chain.newest), str(out), type=out_type).run()
    _qemu_check(out)
    assert _qemu_raw(out) == bytes(chain.ref)
    ops.prepare("remediate", str(chain.newest), type=out_type, delete=True).run()
    _qemu_check(chain.base)
    assert _qemu_raw(chain.base) == bytes(chain.ref)


# Requirement (issue 3): libvhdi reads created VHDX chains identically (a 4-level chain
# with present zeros hiding parent data).
def test_libvhdi_reads_a_created_four_level_chain(tmp_path: Path) -> None:
    pyvhdi = pytest.importorskip("pyvhdi")
    chain = build_chain(tmp_path, "vhdx", size=16 * MIB, children=3)
    files = []
    for p in chain.paths:
        f = pyvhdi.file()
        f.open(str(p))
        files.append(f)
    for parent, child in itertools.pairwise(files):
        child.set_parent(parent)
    try:
        assert bytes(files[-1].read_buffer_at_offset(len(chain.ref), 0)) == chain.ref
    finally:
        for f in reversed(files):
            f.close()


# Requirement (issue 3, Writing): a merge into a parent changes its DataWriteGuid, so a
# child depending on it must have been refused earlier, listed; forced, that child no
# longer links (typed error) instead of reading changed data.
def test_vhdx_merge_refuses_dependents_then_forced_breaks_their_link(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhdx", size=16 * MIB, children=2)
    with open_layer(str(chain.base)) as base:
        old_id = base.link_id
        branch = vhdx.create(tmp_path / "branch.avhdx", base.virtual_size,
                             DiskType.DIFFERENCING, parent=base)
        branch.write(0, b"\x77" * 512)
        branch.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DependentChildrenError, match=r"branch\.avhdx") as ei:
        ops.prepare("merge", str(chain.newest), into=str(chain.base))
    assert ei.value.exit_code == 5
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    ops.prepare("merge", str(chain.newest), into=str(chain.base), force=True,
                delete=True).run()
    with open_layer(str(chain.base)) as base:
        assert base.link_id != old_id
    assert read_all(chain.base) == chain.ref
    with pytest.raises(ParentMismatchError):
        vhdlib.open(tmp_path / "branch.avhdx")
    assert not os.path.exists(str(chain.base) + journal.SUFFIX)
