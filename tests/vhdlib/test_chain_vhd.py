"""VHD chains through vhdlib.open: resolution by every locator kind, extents, content."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

import vhdlib
from vhdlib.errors import ParentMismatchError
from vhdlib.extents import ExtentKind
from vhdlib.vhd import create
from vhdlib.vhd.structs import PLATFORM_CODE_MACX, DynamicHeader, ParentLocator

MIB = 1 << 20


def _chain(folder: Path) -> bytes:
    """base <- s1 <- s2 <- s3 (the incident's shape); returns the expected content."""
    size = 8 * MIB
    model = bytearray(size)
    base = create(folder / "base.vhd", size, "dynamic")
    base.write(0, b"\x01" * (3 * MIB))
    model[:3 * MIB] = b"\x01" * (3 * MIB)
    parent = base
    layers = [base]
    for i, (off, n) in enumerate([(MIB, 512 * 3), (2 * MIB - 512, 1024), (6 * MIB, 4096)]):
        child = create(folder / f"base_S{i}.avhd", None, "differencing", parent=parent)
        child.write(off, bytes([0x10 + i]) * n)
        model[off:off + n] = bytes([0x10 + i]) * n
        layers.append(child)
        parent = child
    layers[2].write_zeroes(512, 512)
    model[512:1024] = bytes(512)
    for layer in layers:
        layer.close()
    return bytes(model)


def test_chain_of_four_reads_exactly(tmp_path: Path) -> None:
    expected = _chain(tmp_path)
    with vhdlib.open(tmp_path / "base_S2.avhd") as disk:
        assert len(disk.layers) == 4
        assert disk.read(0, disk.virtual_size) == expected
        exts = list(disk.extents())
        assert exts[0].kind is ExtentKind.DATA and exts[0].layer == 3
        assert any(e.kind is ExtentKind.DATA and e.layer == 1 for e in exts)
        assert exts[-1].kind is ExtentKind.UNALLOCATED
        assert disk.info()["chain"][0]["type"] == "differencing"


def test_chain_moved_to_another_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    expected = _chain(tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")  # W2ku paths now stale; W2ru still right
    with vhdlib.open(tmp_path / "b" / "base_S2.avhd") as disk:
        assert disk.read(0, disk.virtual_size) == expected


def _rewrite_locators(path: Path, locators: list[ParentLocator], name: str = "") -> None:
    raw = path.read_bytes()[512:1536]
    h = DynamicHeader.parse(raw)
    locs = tuple(locators) + (ParentLocator(),) * (8 - len(locators))
    raw_name = name.encode("utf-16-be").ljust(512, b"\0") if name else bytes(512)
    h = dataclasses.replace(h, locators=locs, parent_unicode_name_raw=raw_name).with_checksum()
    with open(path, "r+b") as f:
        f.seek(512)
        f.write(h.serialize())


def test_parent_by_macx_url(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    base = create(tmp_path / "p" / "base.vhd", MIB, "dynamic")
    base.write(0, b"\x07" * 512)
    child = create(tmp_path / "child.vhd", None, "differencing", parent=base)
    base.close()
    child.close()
    url = f"file://{tmp_path}/p/base.vhd".encode()
    off = 4096  # the W2ku slot's space (4 KiB) holds the URL
    with open(tmp_path / "child.vhd", "r+b") as f:
        f.seek(off)
        f.write(url.ljust(4096, b"\0"))
    _rewrite_locators(tmp_path / "child.vhd",
                      [ParentLocator.new(PLATFORM_CODE_MACX, 4096, len(url), off)])
    with vhdlib.open(tmp_path / "child.vhd") as disk:
        assert disk.layers[1].path == f"{tmp_path}/p/base.vhd"
        assert disk.read(0, 512) == b"\x07" * 512


def test_parent_by_uuid_search(tmp_path: Path) -> None:
    base = create(tmp_path / "renamed.vhd", MIB, "dynamic")
    child = create(tmp_path / "child.avhd", None, "differencing", parent=base)
    base.close()
    child.close()
    _rewrite_locators(tmp_path / "child.avhd", [])  # no locators, no name
    with vhdlib.open(tmp_path / "child.avhd") as disk:
        assert Path(disk.layers[1].path).name == "renamed.vhd"


def test_parent_uuid_mismatch(tmp_path: Path) -> None:
    base = create(tmp_path / "base.vhd", MIB, "dynamic")
    child = create(tmp_path / "child.vhd", None, "differencing", parent=base)
    base.close()
    child.close()
    os.unlink(tmp_path / "base.vhd")
    create(tmp_path / "base.vhd", MIB, "dynamic").close()  # same name, other UUID
    with pytest.raises(ParentMismatchError):
        vhdlib.open(tmp_path / "child.vhd")


def test_dfvfs_pair_copied_finds_parent_by_name(tmp_path: Path) -> None:
    from tests.realimages import DFVFS_MERGED_SHA256, disk_sha256, materialize
    for name in ("image.vhd", "image-differential.vhd"):
        shutil.copy(materialize(f"dfvfs/{name}"), tmp_path / name)
    with vhdlib.open(tmp_path / "image-differential.vhd", lenient=True) as disk:
        assert [Path(p).name for p in disk.chain] == ["image-differential.vhd", "image.vhd"]
        assert disk_sha256(disk) == DFVFS_MERGED_SHA256
