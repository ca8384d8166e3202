"""check() and repair() of VHDX files."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.conftest import require_tool
from vhdlib import vhdx
from vhdlib.formats import open_layer
from vhdlib.vhdx import structs as S

MiB = 1 << 20


def _make(tmp_path, name="c.vhdx"):
    path = tmp_path / name
    with vhdx.create(str(path), 32 * MiB, "dynamic", block_size=MiB) as lay:
        lay.write(0, b"\x01" * MiB)
        lay.write(4 * MiB, b"\x04" * 4096)
    return path


def _codes(path, **kw):
    with open_layer(str(path), **kw) as lay:
        return sorted(p.code for p in lay.check())


def test_clean_file_has_no_problems(tmp_path):
    assert _codes(_make(tmp_path)) == []


def test_real_images_check_clean(real_image):
    for name in ("dissect.hypervisor/fixed.vhdx", "dissect.hypervisor/differencing.avhdx",
                 "qemu-iotests/iotest-dynamic-1G.vhdx"):
        assert _codes(real_image(name)) == [], name
    assert _codes(real_image("discutils/vhdx-log-replay.vhdx")) == ["dirty_log"]


def test_orphan_tail_found_and_trimmed(tmp_path):
    path = _make(tmp_path)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x99" * (3 * MiB))
    assert _codes(path) == ["orphan_tail"]
    with open_layer(str(path), writable=True) as lay:
        done = lay.repair()
        assert any("orphan" in d for d in done)
    assert path.stat().st_size == size
    assert _codes(path) == []


def test_damaged_header_and_region_table_repaired(tmp_path):
    path = _make(tmp_path)
    with open(path, "r+b") as f:
        f.seek(S.HEADER1_OFFSET + 100)
        f.write(b"\xff")
        f.seek(S.REGION_TABLE2_OFFSET + 200)
        f.write(b"\xff")
    assert _codes(path) == ["header_checksum", "region_table_checksum"]
    with open_layer(str(path), writable=True) as lay:
        assert len(lay.repair()) == 2
    assert _codes(path) == []
    qemu = require_tool("qemu-img")
    assert subprocess.run([qemu, "check", str(path)], capture_output=True).returncode == 0


def test_dirty_log_repaired(scratch):
    path = scratch("discutils/vhdx-log-replay.vhdx")
    with open_layer(str(path), writable=True) as lay:
        assert "replayed the log" in lay.repair()
    assert _codes(path) == []


def test_bat_overlap_and_past_eof(tmp_path):
    path = _make(tmp_path)
    with open_layer(str(path)) as lay:
        bat_off = lay.bat_region.file_offset
        first = lay.bat[0]
    fd = os.open(path, os.O_RDWR)
    try:
        # block 2 -> the same slot as block 0; block 3 -> far past the end of the file
        os.pwrite(fd, first.to_bytes(8, "little"), bat_off + 16)
        far = S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT, 1 << 40)
        os.pwrite(fd, far.to_bytes(8, "little"), bat_off + 24)
    finally:
        os.close(fd)
    assert set(_codes(path)) == {"bat_overlap", "bat_past_eof"}


def test_checked_copy_of_a_created_differencing_disk(tmp_path):
    base = _make(tmp_path, "base.vhdx")
    with open_layer(str(base)) as parent:
        child = vhdx.create(str(tmp_path / "child.avhdx"), 32 * MiB, "differencing",
                            parent=parent, block_size=MiB)
    with child:
        child.write(512, b"\x05" * 512)
    assert _codes(tmp_path / "child.avhdx") == []
    shutil.copyfile(tmp_path / "child.avhdx", tmp_path / "copy.avhdx")
    assert _codes(tmp_path / "copy.avhdx") == []


def test_block_store_droppable_reads_the_whole_block(tmp_path):
    """A block is droppable only when every byte of it is zero: data in the last byte of
    a second 8 MiB read counts as much as in the first."""
    path = tmp_path / "z.vhdx"
    with vhdx.create(str(path), 64 * MiB, "dynamic", block_size=16 * MiB) as lay:
        lay.write(0, bytes(16 * MiB))                  # block 0: allocated, all zero
        lay.write(32 * MiB - 512, bytes(511) + b"\x01")  # block 1: one byte at its end
        lay.write(32 * MiB, b"\x02" + bytes(4095))     # block 2: data in its first byte
    with open_layer(str(path)) as lay:
        bs = lay.block_store()
        assert bs is not None
        assert [bs.droppable(i) for i in range(4)] == [True, False, False, True]
