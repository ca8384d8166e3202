"""Bad parent links (issue 9): NUL in a locator path, a self-loop, an unreadable parent, a
child whose size differs from its parent's. Each is a typed error or a check problem that
names the file at fault, never a crash and never a clean bill."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import vhdlib
from tests.chains import create
from tests.vhdlib import damage
from vhdlib.check import check
from vhdlib.errors import ChainError, ChainLoopError, ImageError
from vhdlib.layer import DiskType

MiB = 1 << 20
EXT = {"vhd": (".vhd", ".avhd"), "vhdx": (".vhdx", ".avhdx")}


def _pair(folder: Path, fmt: str) -> tuple[Path, Path]:
    base_ext, child_ext = EXT[fmt]
    base, child = folder / f"base{base_ext}", folder / f"child{child_ext}"
    bs = 512 * 1024 if fmt == "vhd" else MiB
    with create(fmt, base, 8 * MiB, DiskType.DYNAMIC, block_size=bs) as b:
        b.write(0, b"\x11" * 4096)
        b.flush()
        with create(fmt, child, None, DiskType.DIFFERENCING, parent=b) as c:
            c.write(8192, b"\x22" * 4096)
            c.flush()
    return base, child


# --- item 2: a NUL inside a locator's path --------------------------------------------------

def test_vhd_locator_running_past_its_nul_padding_is_skipped(scratch) -> None:
    """dfvfs fat-differential.vhd with locator 0's length 84 -> 0x1054, header checksum
    recomputed: the path now holds NULs. Every command used to crash (ValueError)."""
    path = scratch("dfvfs/fat-differential.vhd")
    assert damage.get_field(path, "vhd.header", "loc0.length") == 84
    damage.set_field(path, "vhd.header", "loc0.length", 0x1054)
    with pytest.raises(ChainError) as e:
        vhdlib.open(str(path))
    assert "NUL" in str(e.value)
    report = check(str(path))
    assert not report.clean
    assert any("NUL" in p.message for p in report.problems)


def test_vhd_locator_with_nul_and_bad_checksum_is_checked(scratch) -> None:
    path = scratch("dfvfs/fat-differential.vhd")
    damage.set_field(path, "vhd.header", "loc0.length", 0x1054, fix=False)
    report = check(str(path))
    assert {"header_checksum", "parent_locator"} <= {p.code for p in report.problems}


def test_vhdx_relative_path_with_nul_falls_back_to_the_next_locator(tmp_path: Path) -> None:
    _base, child = _pair(tmp_path, "vhdx")
    rel = damage.locator_value(child, "relative_path")
    damage.set_locator_value(child, "relative_path", rel[:-1] + "\0")
    with vhdlib.open(str(child)) as disk:  # absolute_win32_path still finds the parent
        assert disk.read(0, 4096) == b"\x11" * 4096
        assert any("NUL" in w for w in disk.layers[0].warnings)
    report = check(str(child))
    assert any(p.code == "parent_locator" and "NUL" in p.message for p in report.problems)


# --- item 5: a locator that points at the child itself ---------------------------------------

@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_self_loop_is_a_loop_for_open_and_for_check(tmp_path: Path, fmt: str) -> None:
    """The file at the parent's place is the child itself, linked to its own id."""
    base, child = _pair(tmp_path, fmt)
    shutil.copyfile(child, base)
    child.unlink()  # else the search by id finds the original child
    damage.link_to_itself(base)
    with pytest.raises(ChainLoopError):
        vhdlib.open(str(base))
    report = check(str(base))
    assert not report.clean
    assert any(p.code == "parent_link" and "itself" in p.message for p in report.problems)


# --- items 6 and 9: a parent that exists but is unreadable -----------------------------------

@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_unreadable_parent_says_why_and_check_agrees_with_info(tmp_path: Path,
                                                               fmt: str) -> None:
    base, child = _pair(tmp_path, fmt)
    # A checksum that no longer matches, where there is no good copy to fall back to (the
    # VHD dynamic header; both VHDX headers).
    kind, name = ("vhd.header", "parent_timestamp") if fmt == "vhd" else ("vhdx.header",
                                                                          "sequence")
    for i in range(1 if fmt == "vhd" else 2):
        value = damage.get_field(base, kind, name, index=i)
        damage.set_field(base, kind, name, value ^ 0x200, fix=False, index=i)
    with pytest.raises(ChainError) as e:
        vhdlib.open(str(child))
    assert str(base) in str(e.value)
    assert "not a readable image" in str(e.value)
    assert "checksum" in str(e.value).lower() or "crc" in str(e.value).lower()
    report = check(str(child))
    assert not report.clean, "check opened the parent leniently"
    assert any(str(base) in p.message for p in report.problems)


# --- item 7: a chain must agree on size ------------------------------------------------------

def test_vhdx_child_whose_size_differs_from_its_parent_is_refused(tmp_path: Path) -> None:
    _base, child = _pair(tmp_path, "vhdx")
    damage.set_field(child, "vhdx.virtual_size", "size", 16 * MiB)
    with pytest.raises(ImageError) as e:
        vhdlib.open(str(child))
    assert "size" in str(e.value)
    report = check(str(child))
    assert not report.clean
