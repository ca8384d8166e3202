"""Reading real VHDX/AVHDX images exactly (MANIFEST content sha256), parents, info."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import vhdlib.chain as chain
from tests import realimages
from tests.conftest import require_tool
from vhdlib import vhdx
from vhdlib.errors import ParentNotFoundError
from vhdlib.extents import ExtentKind, SegmentState
from vhdlib.formats import open_layer
from vhdlib.layer import DiskType
from vhdlib.vhdx import structs as S
from vhdlib.vhdx.locators import windows_candidates

VHDX_IMAGES = [img for img in realimages.IMAGES
               if img.suffix in (".vhdx", ".avhdx") and img.content_sha256 is not None]
AVHDX = "dissect.hypervisor/differencing.avhdx"
PARENT_NAME = "Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx"


@pytest.mark.parametrize("img", VHDX_IMAGES, ids=[i.name for i in VHDX_IMAGES])
def test_real_image_reads_to_manifest_sha256(img, real_image):
    path = real_image(img.name)
    before = realimages.file_sha256(path)
    with chain.open(str(path), lenient=img.lenient) as disk:
        assert disk.virtual_size == img.virtual_size
        assert realimages.disk_sha256(disk) == img.content_sha256
    # Reading never writes, even when the log is dirty (replayed in memory).
    assert realimages.file_sha256(path) == before


def test_metadata_of_dissect_images(real_image):
    with open_layer(str(real_image("dissect.hypervisor/fixed.vhdx"))) as lay:
        assert isinstance(lay, vhdx.VhdxLayer)
        assert lay.disk_type is DiskType.FIXED
        assert lay.block_size == 0x200000 and lay.chunk_ratio == 0x800
        assert lay.logical_sector_size == 512 and lay.physical_sector_size == 4096
        assert str(lay.virtual_disk_id) == "4a49d245-db0a-4634-9818-9f93db5ba6c1"
        info = lay.info()
        assert info["bat_states"] == {"fully_present": 5}
        assert info["log"] == "clean"
        assert lay.structure_checksum() == f"{lay.header.checksum:08x}"
    with open_layer(str(real_image("dissect.hypervisor/dynamic.vhdx"))) as lay:
        assert lay.disk_type is DiskType.DYNAMIC and lay.chunk_ratio == 0x80


def test_header_sequence_numbers_and_states(real_image):
    with open_layer(str(real_image("qemu-iotests/iotest-dynamic-1G.vhdx"))) as lay:
        assert lay.info()["header_sequence_numbers"] == [14, 15]
        assert lay.info()["bat_states"] == {"fully_present": 3, "zero": 29}


@pytest.mark.slow
def test_disk2vhd_equal_sequence_numbers(real_image):
    with open_layer(str(real_image("qemu-iotests/test-disk2vhd.vhdx"))) as lay:
        assert lay.info()["header_sequence_numbers"] == [1, 1]
        assert lay.creator == "d2v"


@pytest.mark.slow
def test_unmapped_blocks_read_as_zero(real_image):
    with open_layer(str(real_image("discutils/lvm2.vhdx"))) as lay:
        assert lay.info()["bat_states"]["unmapped"] == 25
        idx = next(i for i in range(lay.data_blocks) if lay.payload_state(i) == 3)
        segs = list(lay.segments(idx * lay.block_size, lay.block_size))
        assert [s.state for s in segs] == [SegmentState.ZERO]


def test_avhdx_without_parent_lists_locations(real_image):
    path = str(real_image(AVHDX))
    with pytest.raises(ParentNotFoundError) as ei:
        chain.open(path)
    tried = ei.value.tried
    assert [t.split(" ", 1)[0] for t in tried[:3]] == ["relative_path", "volume_path",
                                                       "absolute_win32_path"]
    assert tried[-1].startswith("search by id")
    with open_layer(path) as lay:
        link = lay.parent_link
        assert link is not None
        assert str(link.expected_id) == realimages.AVHDX_PARENT_LINKAGE
        assert link.alternate_ids == ()  # parent_linkage2 is all zero
        assert lay.present_sectors() == realimages.AVHDX_PRESENT_SECTORS
        assert lay.link_id == lay.header.data_write_guid


def test_avhdx_with_a_created_parent(real_image, tmp_path):
    # Given the real checkpoint next to a parent we create carrying the linkage GUID
    child = tmp_path / "differencing.avhdx"
    shutil.copyfile(real_image(AVHDX), child)
    parent = vhdx.create(str(tmp_path / PARENT_NAME), 8 << 30, "dynamic", block_size=2 << 20,
                         data_write_guid=uuid.UUID(realimages.AVHDX_PARENT_LINKAGE))
    parent.write(0, b"\xee" * (64 << 20))
    parent.close()  # the write renewed DataWriteGuid (spec 2.2.2): give it the linkage back
    _set_data_write_guid(tmp_path / PARENT_NAME, uuid.UUID(realimages.AVHDX_PARENT_LINKAGE))
    # When the chain is opened, it resolves and the child's present sectors win
    with chain.open(str(child)) as disk:
        assert len(disk.layers) == 2
        child_bytes = 0
        for ext in disk.extents():
            if ext.kind is ExtentKind.DATA and ext.layer == 0:
                child_bytes += ext.length
                raw = os.pread(disk.layers[0].fd, ext.length, ext.file_offset)
                assert disk.read(ext.offset, ext.length) == raw
            elif ext.kind is ExtentKind.DATA:
                assert ext.end <= 64 << 20
                assert disk.read(ext.offset, ext.length) == b"\xee" * ext.length
        assert child_bytes == realimages.AVHDX_PRESENT_SECTORS * 512


def _set_data_write_guid(path: Path, g: uuid.UUID) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        for off in (S.HEADER1_OFFSET, S.HEADER2_OFFSET):
            h = S.Header.parse(os.pread(fd, S.HEADER_SIZE, off))
            os.pwrite(fd, h.copy(data_write_guid=g).serialize(), off)
    finally:
        os.close(fd)


def test_dirty_log_readonly_then_writable_replay(real_image, tmp_path, scratch):
    name = "discutils/vhdx-log-replay.vhdx"
    img = realimages.BY_NAME[name]
    ro = real_image(name)
    before = realimages.file_sha256(ro)
    with chain.open(str(ro)) as disk:
        assert disk.top.info()["log"].startswith("dirty")
        assert realimages.disk_sha256(disk) == img.content_sha256
    assert realimages.file_sha256(ro) == before
    copy = scratch(name)
    with open_layer(str(copy), writable=True) as lay:
        assert lay.info()["log"] == "replayed at open"
        assert lay.header.log_guid == uuid.UUID(int=0)
    with chain.open(str(copy)) as disk:
        assert disk.top.info()["log"] == "clean"
        assert realimages.disk_sha256(disk) == img.content_sha256
        assert disk.top.info()["bat_states"] == {"fully_present": 1, "zero": 3,
                                                 "not_present": 28}
    qemu = require_tool("qemu-img")
    r = subprocess.run([qemu, "check", str(copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert subprocess.run([qemu, "info", str(copy)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_dirtylog_fixture_writable_replay(scratch):
    name = "qemu-iotests/iotest-dirtylog-10G-4M.vhdx"
    copy = scratch(name)
    with open_layer(str(copy), writable=True) as lay:
        assert lay.info()["bat_states"]["fully_present"] == 18
    with chain.open(str(copy)) as disk:
        assert realimages.disk_sha256(disk) == realimages.BY_NAME[name].content_sha256
    qemu = require_tool("qemu-img")
    r = subprocess.run([qemu, "check", str(copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_libvhdi_agrees_on_a_real_image(real_image):
    pyvhdi = pytest.importorskip("pyvhdi")
    path = str(real_image("dissect.hypervisor/dynamic.vhdx"))
    f = pyvhdi.file()
    f.open(path)
    try:
        with chain.open(path) as disk:
            assert f.read_buffer_at_offset(disk.virtual_size, 0) == disk.read(
                0, disk.virtual_size)
    finally:
        f.close()


def test_windows_path_mapping(tmp_path: Path):
    cands = windows_candidates("C:\\Users\\x\\base.vhdx", str(tmp_path), relative=False)
    assert cands == [str(tmp_path / "base.vhdx")]
    cands = windows_candidates("Z:\\srv\\base.vhdx", str(tmp_path), relative=False)
    assert cands[0] == "/srv/base.vhdx"
    cands = windows_candidates(".\\sub\\p.vhdx", str(tmp_path), relative=True)
    assert cands == [str(tmp_path / "sub" / "p.vhdx")]
