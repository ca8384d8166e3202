"""Silent misreads (issue 9, items 3, 4 and 7): damaged images that were read as if they
were fine, or that ``check`` called clean. Each is now refused (typed error) or a problem."""

from __future__ import annotations

from pathlib import Path

import pytest

import vhdlib
from tests.chains import create
from tests.vhdlib import damage
from tests.vhdmend.helpers import run_cli
from vhdlib.check import check
from vhdlib.errors import ImageError
from vhdlib.layer import DiskType

MiB = 1 << 20


# --- item 3: PARTIALLY_PRESENT blocks whose chunk has no sector bitmap ---------------------

def test_vhdx_partially_present_without_bitmap_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.vhdx"
    child = tmp_path / "child.avhdx"
    with create("vhdx", base, 8 * MiB, DiskType.DYNAMIC, block_size=MiB) as b:
        b.write(0, b"\x11" * MiB)
        b.flush()
        with create("vhdx", child, None, DiskType.DIFFERENCING, parent=b) as c:
            c.write(4096, b"\x22" * 4096)  # block 0 becomes PARTIALLY_PRESENT
            c.flush()
    assert damage.get_field(child, "vhdx.bat", "bat[0].payload") & 7 == 7
    bitmap = next(f.name for f in damage.find(child, "vhdx.bat").fields if "bitmap" in f.name)
    assert damage.get_field(child, "vhdx.bat", bitmap) & 7 == 6
    damage.set_field(child, "vhdx.bat", bitmap, 0)  # SB_BLOCK_NOT_PRESENT
    with vhdlib.open(str(child)) as disk, pytest.raises(ImageError, match="bitmap"):
        disk.read(4096, 4096)
    report = check(str(child))
    assert any("bitmap" in p.message for p in report.problems), report.to_dict()
    r = run_cli("convert", child, tmp_path / "out.raw", "--format", "raw", "-q")
    assert r.code == 3, r.err


# --- item 4: a dynamic VHD whose block data runs past the end of the file -------------------

def test_vhd_block_data_past_eof_is_a_problem_and_refused(tmp_path: Path) -> None:
    """The header's block size changed 2 -> 4 MiB (checksum recomputed): the bitmap still
    lies inside the file, the block's data no longer does."""
    path = tmp_path / "d.vhd"
    with create("vhd", path, 8 * MiB, DiskType.DYNAMIC, block_size=2 * MiB) as layer:
        layer.write(2 * MiB, b"\x01" * 4096)  # block 1 only: no overlap after the change
        layer.flush()
    damage.set_field(path, "vhd.header", "block_size", 4 * MiB)
    report = check(str(path))
    assert "bat_past_eof" in {p.code for p in report.problems}, report.to_dict()
    for command in (["info"], ["map"]):
        r = run_cli(*command, path)
        assert r.code == 3, (command, r.out, r.err)


# --- item 7: fixed VHDs whose footer does not describe their data ----------------------------

def test_fixed_vhd_smaller_than_its_data_area_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "f.vhd"
    with create("vhd", path, 8 * MiB, DiskType.FIXED) as layer:
        layer.write(7 * MiB, b"\x07" * 4096)
    damage.set_field(path, "vhd.footer", "current_size", 4 * MiB)
    report = check(str(path))
    assert any(p.code == "fixed_size" for p in report.problems), report.to_dict()


def test_fixed_vhd_same_size_as_its_data_area_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "f.vhd"
    with create("vhd", path, 8 * MiB, DiskType.FIXED):
        pass
    assert check(str(path)).clean


def test_dynamic_vhd_relabelled_fixed_is_a_problem(tmp_path: Path) -> None:
    """Footer type 3 -> 2 (checksum recomputed): read as raw bytes, header and BAT included."""
    path = tmp_path / "d.vhd"
    with create("vhd", path, 2 * MiB, DiskType.DYNAMIC, block_size=512 * 1024) as layer:
        layer.write(0, b"\x05" * (2 * MiB))  # every block: the file outgrows the disk
        layer.flush()
    damage.set_field(path, "vhd.footer", "disk_type", 2)
    report = check(str(path))
    assert any(p.code == "fixed_layout" for p in report.problems), report.to_dict()
