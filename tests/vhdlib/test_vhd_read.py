"""Every real VHD reads to its MANIFEST content sha256; edge cases of the real images."""

from __future__ import annotations

import shutil
from pathlib import Path
from uuid import UUID

import pytest

import vhdlib
from tests import realimages
from tests.realimages import FAT_DIFF_PRESENT, disk_sha256, materialize
from vhdlib.errors import ChecksumError, ParentNotFoundError
from vhdlib.extents import ExtentKind, SegmentState
from vhdlib.formats import open_layer
from vhdlib.layer import DiskType
from vhdlib.vhd import VhdLayer

READABLE = [i for i in realimages.IMAGES
            if i.suffix in (".vhd", ".vhdf") and not i.parent_absent]


@pytest.mark.parametrize("img", READABLE, ids=lambda i: i.name)
def test_real_vhd_content(img: realimages.RealImage) -> None:
    with vhdlib.open(materialize(img.name), lenient=img.lenient) as disk:
        assert disk.virtual_size == img.virtual_size
        if img.content_sha256 is None:
            # The two 127 GiB images: no block allocated (MANIFEST section 2).
            exts = list(disk.extents())
            assert [(e.offset, e.length, e.kind) for e in exts] == [
                (0, img.virtual_size, ExtentKind.UNALLOCATED)]
        else:
            assert disk_sha256(disk) == img.content_sha256


@pytest.mark.parametrize("name", ["dfvfs/image.vhd", "dfvfs/image-differential.vhd"])
def test_bad_checksums_refused_by_default(name: str) -> None:
    with pytest.raises(ChecksumError) as ei:
        open_layer(str(materialize(name)))
    msg = str(ei.value)
    assert "checksum" in msg and "stored 0x" in msg and "computed 0x" in msg


def test_dfvfs_pair_is_a_chain_found_by_header_name() -> None:
    with vhdlib.open(materialize("dfvfs/image-differential.vhd"), lenient=True) as disk:
        assert len(disk.layers) == 2
        assert Path(disk.layers[1].path).name == "image.vhd"
        assert disk.layers[1].link_id == UUID("d49c5c80-350a-4a89-898a-5ad6d10f6578")
        assert disk_sha256(disk) == realimages.DFVFS_MERGED_SHA256
        assert any("checksum" in w for w in disk.top.warnings)


def test_image_differential_without_parent(tmp_path: Path) -> None:
    child = tmp_path / "image-differential.vhd"
    shutil.copy(materialize("dfvfs/image-differential.vhd"), child)
    with pytest.raises(ParentNotFoundError) as ei:
        vhdlib.open(child, lenient=True)
    tried = ei.value.tried
    assert any(t.startswith("name image.vhd") for t in tried)
    assert any(t.startswith("search by id") for t in tried)


def test_fat_differential_present_sectors() -> None:
    path = str(materialize("dfvfs/fat-differential.vhd"))
    with open_layer(path) as layer:
        assert isinstance(layer, VhdLayer)
        assert layer.disk_type is DiskType.DIFFERENCING
        present: list[int] = []
        for seg in layer.segments(0, layer.virtual_size):
            if seg.state is SegmentState.PRESENT:
                present.extend(range(seg.offset // 512, seg.end // 512))
                # Block 0's data starts 512 bytes after its bitmap at sector 0x9f.
                assert seg.file_offset == 0x9F * 512 + 512 + seg.offset
        assert present == FAT_DIFF_PRESENT
        link = layer.parent_link
        assert link is not None
        assert link.expected_id == UUID("5fa21a55-f394-aa4d-9958-1951a67d5540")
        assert link.candidates[0][0] == "W2ru .\\fat-parent.vhd"
        # Sector 152 starts with the volume label.
        with vhdlib.open(path, resolve_parents=False) as disk:
            assert disk.read(152 * 512, 11) == b"TESTVOLUME "


def test_fat_differential_parent_not_found_lists_locations() -> None:
    with pytest.raises(ParentNotFoundError) as ei:
        vhdlib.open(materialize("dfvfs/fat-differential.vhd"))
    tried = " | ".join(ei.value.tried)
    assert "W2ru .\\fat-parent.vhd" in tried
    assert "W2ku C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd" in tried
    assert "search by id" in tried


def test_fat_differential_found_by_w2ku_basename(tmp_path: Path) -> None:
    # W2ru points elsewhere but W2ku's basename is in the child's folder: the header name
    # and the W2ku-by-name candidate find it (here: a copy of the child itself is not it).
    child = tmp_path / "sub" / "fat-differential.vhd"
    child.parent.mkdir()
    shutil.copy(materialize("dfvfs/fat-differential.vhd"), child)
    with open_layer(str(child)) as layer:
        link = layer.parent_link
        assert link is not None
        paths = [p for _, p in link.candidates]
        assert str(tmp_path / "sub" / "fat-parent.vhd") in paths


def test_info_facts() -> None:
    with open_layer(str(materialize("qemu-iotests/virtualpc-dynamic.vhd"))) as layer:
        info = layer.info()
        assert info["virtual_size"] == 136365211648
        assert info["chs_size"] == 136363130880  # what qemu 7.2 reports (MANIFEST 7.1)
        assert info["creator_app"] == "vpc "
        assert info["uuid"] == "33ea0013-6191-4d02-b93f-88af84296f85"
        assert info["bat_entries"] == 65024 and info["allocated_blocks"] == 0
        assert info["geometry"] == {"cylinders": 65278, "heads": 16, "sectors": 255}
    with open_layer(str(materialize("qemu-iotests/d2v-zerofilled.vhd"))) as layer:
        info = layer.info()
        assert info["creator_app"] == "d2v\0"
        assert info["allocated_blocks"] == 126
        # Disk2vhd's last bitmap marks sectors past the end: informational only.
        assert [p.code for p in layer.check()] == ["bitmap_past_end"]
    with open_layer(str(materialize("freebsd-mkimg/img-63x255-512-mbr.vhdf"))) as layer:
        info = layer.info()
        assert info["virtual_size"] == 16777216 and info["chs_size"] == 16450560
        assert info["type"] == "fixed"


def test_dynamic_segments_coalesce_and_cross_blocks() -> None:
    # dissect dynamic.vhd: blocks 0, 1, 3 allocated, BAT out of file order.
    with open_layer(str(materialize("dissect.hypervisor/dynamic.vhd"))) as layer:
        segs = list(layer.segments(0, layer.virtual_size))
        kinds = [(s.offset // (2 << 20), s.length // (2 << 20), s.state.value) for s in segs]
        assert kinds == [(0, 1, "present"), (1, 1, "present"), (2, 1, "absent"),
                         (3, 1, "present"), (4, 1, "absent")]
    with vhdlib.open(materialize("dissect.hypervisor/dynamic.vhd")) as disk:
        assert disk.read(0x3FFF * 512, 16 * 512) == bytes(16 * 512)
        assert disk.read(0x200000, 512) == b"\xff" * 512


def test_d2v_unaligned_data_one_segment_per_block() -> None:
    with open_layer(str(materialize("qemu-iotests/d2v-zerofilled.vhd"))) as layer:
        seg = next(iter(layer.segments(0, 4096)))
        assert seg.file_offset == 2560  # block 0 at sector 4, data after its bitmap
        segs = list(layer.segments(0, layer.virtual_size))
        assert all(s.state is SegmentState.PRESENT for s in segs)
        assert len(segs) <= 126


def test_a_walk_over_many_blocks_hints_their_bitmaps_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold walk of a dynamic VHD's map announces every unknown allocated bitmap before
    reading them (one read-ahead hint each, never for an unallocated block, never twice),
    and the map it gives is the same as without hints."""
    from vhdlib import fileio
    from vhdlib.vhd import create

    mib = 1 << 20
    path = tmp_path / "d.vhd"
    with create(path, 12 * mib, DiskType.DYNAMIC, uuid=UUID(int=7), timestamp=5) as layer:
        for block in (0, 2, 3, 5):
            layer.write(block * 2 * mib + 4096, b"\x5a" * 8192)
    hints: list[tuple[int, int]] = []
    monkeypatch.setattr(fileio, "will_need", lambda fd, off, n: hints.append((off, n)))
    with open_layer(str(path)) as layer:
        assert isinstance(layer, VhdLayer) and layer.bat is not None
        slots = [layer.bat.entries[b] * 512 for b in (0, 2, 3, 5)]
        segments = list(layer.segments(0, 12 * mib))
        assert hints == [(s, 512) for s in slots]
        list(layer.segments(0, 12 * mib))  # known now: no second hint
        assert len(hints) == 4
    monkeypatch.setattr(fileio, "will_need", lambda fd, off, n: None)
    with open_layer(str(path)) as layer:
        assert list(layer.segments(0, 12 * mib)) == segments
