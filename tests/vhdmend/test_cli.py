"""The CLI on real images and on chains it builds: output shape, round trips, exit codes."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest

import vhdlib
from tests import realimages
from tests.vhdmend.helpers import assert_clean_error, run_cli
from vhdlib import demo

INFO_KEYS = {"format", "type", "virtual_size", "block_size", "file_size", "allocated_bytes",
             "chain"}

VHD_IMAGES = [
    ("dissect.hypervisor/fixed.vhd", "fixed", 0),
    ("dissect.hypervisor/dynamic.vhd", "dynamic", 2 << 20),
    ("dfvfs/ext2.vhd", "dynamic", None),
    ("freebsd-mkimg/img-63x255-512-mbr.vhd", "dynamic", None),
    ("freebsd-mkimg/img-63x255-512-mbr.vhdf", "fixed", 0),
]
VHDX_IMAGES = [
    ("dissect.hypervisor/fixed.vhdx", "fixed", None),
    ("dissect.hypervisor/dynamic.vhdx", "dynamic", None),
    ("freebsd-mkimg/img-63x255-512-mbr.vhdx", None, None),
]
HAVE_VHDX = (realimages.REPO / "vhdlib" / "vhdx" / "__init__.py").exists()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("name", "disk_type", "block_size"), VHD_IMAGES)
def test_info_json_on_real_vhd(real_image, name: str, disk_type: str, block_size: int | None):
    path = real_image(name)
    r = run_cli("info", path, "--json")
    assert r.code == 0, r.err
    info = r.json()
    assert set(info) >= INFO_KEYS
    assert info["format"] == "vhd"
    assert info["type"] == disk_type
    assert info["virtual_size"] == realimages.BY_NAME[name].virtual_size
    assert info["file_size"] == os.path.getsize(path)
    if block_size is not None:
        assert info["block_size"] == block_size
    assert [layer["path"] for layer in info["chain"]] == [str(path)]


@pytest.mark.skipif(not HAVE_VHDX, reason="vhdlib.vhdx not written yet")
@pytest.mark.parametrize(("name", "disk_type", "block_size"), VHDX_IMAGES)
def test_info_json_on_real_vhdx(real_image, name: str, disk_type: str | None,
                                block_size: int | None):
    r = run_cli("info", real_image(name), "--json")
    assert r.code == 0, r.err
    info = r.json()
    assert set(info) >= INFO_KEYS
    assert info["format"] == "vhdx"
    assert info["virtual_size"] == realimages.BY_NAME[name].virtual_size
    if disk_type is not None:
        assert info["type"] == disk_type


def test_info_human_on_real_vhd(real_image) -> None:
    r = run_cli("info", real_image("dissect.hypervisor/dynamic.vhd"))
    assert r.code == 0, r.err
    assert "virtual size:" in r.out and "10485760 bytes" in r.out
    assert "type:" in r.out and "dynamic" in r.out


def test_info_differencing_chain_on_real_pair(real_image, tmp_path: Path) -> None:
    # Given the dfvfs pair (bad checksums: refused by default, readable with --lenient)
    for name in ("dfvfs/image.vhd", "dfvfs/image-differential.vhd"):
        realimages.scratch_copy(name, tmp_path)
    child = tmp_path / "image-differential.vhd"
    # When/Then: refused without --lenient, with a one-line error and exit 3
    assert_clean_error(run_cli("info", child), 3)
    r = run_cli("info", child, "--json", "--lenient")
    assert r.code == 0, r.err
    info = r.json()
    assert info["type"] == "differencing"
    assert [Path(layer["path"]).name for layer in info["chain"]] == [
        "image-differential.vhd", "image.vhd"]


def test_missing_parent_is_exit_3_and_lists_locations(real_image) -> None:
    r = run_cli("info", real_image("dfvfs/fat-differential.vhd"))
    assert_clean_error(r, 3)
    assert "tried" in r.err


def test_map_json_on_real_vhd(real_image) -> None:
    path = real_image("dissect.hypervisor/dynamic.vhd")
    r = run_cli("map", path, "--json")
    assert r.code == 0, r.err
    m = r.json()
    extents = m["extents"]
    # The extents tile the disk in order, without gaps.
    assert extents[0]["start"] == 0
    for a, b in itertools.pairwise(extents):
        assert a["start"] + a["length"] == b["start"]
    assert extents[-1]["start"] + extents[-1]["length"] == m["virtual_size"] == 10485760
    data = [e for e in extents if e["kind"] == "data"]
    assert sum(e["length"] for e in data) == 3 * (2 << 20)  # 3 of 5 blocks allocated
    assert all(e["file"] == str(path) and e["file_offset"] > 0 for e in data)
    r = run_cli("map", path)
    assert r.code == 0 and "unallocated" in r.out and "data" in r.out


@pytest.mark.parametrize("flip_at", ["footer", "header"])
def test_flipped_byte_is_exit_3(real_image, tmp_path: Path, flip_at: str) -> None:
    path = realimages.scratch_copy("dissect.hypervisor/dynamic.vhd", tmp_path)
    data = bytearray(path.read_bytes())
    # Footer checksum covers the trailing footer; the dynamic header sits at 512.
    pos = len(data) - 512 + 40 if flip_at == "footer" else 512 + 40
    data[pos] ^= 0xFF
    if flip_at == "footer":
        data[40] ^= 0xFF  # the copy at offset 0 too: no fallback
    path.write_bytes(bytes(data))
    r = run_cli("info", path)
    assert_clean_error(r, 3)
    assert "checksum" in r.err
    assert path.read_bytes() == bytes(data)  # never a write


@pytest.mark.parametrize(("name", "cut"), [
    ("dissect.hypervisor/fixed.vhd", 512),           # the footer gone
    ("dissect.hypervisor/dynamic.vhd", -1024),       # keep 1 KiB: the header gone
    ("dissect.hypervisor/dynamic.vhd", -3000000),    # keep 3 MB: BAT points past the end
])
def test_truncated_real_image_is_exit_3(real_image, tmp_path: Path, name: str, cut: int):
    path = realimages.scratch_copy(name, tmp_path)
    size = path.stat().st_size
    os.truncate(path, size - cut if cut > 0 else -cut)
    before = _sha256(path)
    for cmd in (["info"], ["map"], ["convert", "--type", "dynamic"]):
        argv = [cmd[0], path]
        if cmd[0] == "convert":
            argv += [tmp_path / "out.vhd", *cmd[1:]]
        assert_clean_error(run_cli(*argv), 3)
    assert not (tmp_path / "out.vhd").exists()
    assert _sha256(path) == before


@pytest.mark.parametrize("disk_type", ["fixed", "dynamic"])
def test_create_then_info_round_trip(tmp_path: Path, disk_type: str) -> None:
    path = tmp_path / f"new-{disk_type}.vhd"
    r = run_cli("create", path, "--type", disk_type, "--size", "16M", "--json")
    assert r.code == 0, r.err
    assert r.json()["virtual_size"] == 16 << 20
    info = run_cli("info", path, "--json").json()
    assert info["format"] == "vhd"
    assert info["type"] == disk_type
    assert info["virtual_size"] == 16 << 20
    if disk_type == "fixed":
        # Fully allocated (not sparse) unless asked.
        assert info["allocated_bytes"] >= 16 << 20
    else:
        assert info["block_size"] == 2 << 20
    r = run_cli("check", path)
    assert r.code == 0, r.out + r.err
    assert "clean" in r.out


def test_create_differencing_round_trip(tmp_path: Path) -> None:
    base = tmp_path / "base.vhd"
    assert run_cli("create", base, "--type", "dynamic", "--size", "8M",
                   "--block-size", "512K").code == 0
    child = tmp_path / "child.avhd"
    r = run_cli("create", child, "--type", "differencing", "--parent", base)
    assert r.code == 0, r.err
    info = run_cli("info", child, "--json").json()
    assert info["type"] == "differencing"
    assert info["virtual_size"] == 8 << 20  # the parent's size
    assert [Path(layer["path"]).name for layer in info["chain"]] == ["child.avhd", "base.vhd"]
    assert info["chain"][1]["block_size"] == 512 << 10


def test_create_sparse_fixed_is_not_allocated(tmp_path: Path) -> None:
    path = tmp_path / "sparse.vhd"
    assert run_cli("create", path, "--type", "fixed", "--size", "64M", "--sparse").code == 0
    assert path.stat().st_size == (64 << 20) + 512
    assert path.stat().st_blocks * 512 < 1 << 20


def test_check_reports_problem_and_repairs(real_image, tmp_path: Path) -> None:
    # Given a dynamic disk whose trailing footer is gone (a crash while allocating)
    path = realimages.scratch_copy("dissect.hypervisor/dynamic.vhd", tmp_path)
    os.truncate(path, path.stat().st_size - 512)
    # When checked: exit 1, the problem named, marked repairable
    r = run_cli("check", path, "--json")
    assert r.code == 1, r.err
    report = r.json()
    assert not report["clean"]
    assert any(p["repairable"] for p in report["problems"])
    # When repaired: says what it did, then checks clean
    r = run_cli("check", path, "--repair")
    assert r.code == 0, r.out + r.err
    assert "repaired" in r.out
    assert run_cli("check", path).code == 0


def test_check_clean_real_image(real_image) -> None:
    r = run_cli("check", real_image("dissect.hypervisor/fixed.vhd"), "--json")
    assert r.code == 0, r.out + r.err
    assert r.json()["clean"] is True


def test_make_bloated_chain_is_deterministic(tmp_path: Path) -> None:
    a = demo.make_bloated_chain(tmp_path / "a", size=16 << 20)
    b = demo.make_bloated_chain(tmp_path / "b", size=16 << 20)
    assert [p.name for p in a] == [p.name for p in b]
    assert a[0].name == "base.vhd"
    assert len(a) == 4 and all(p.suffix == ".avhd" for p in a[1:])
    with vhdlib.open(a[-1]) as da, vhdlib.open(b[-1]) as db:
        assert da.chain == [str(p) for p in reversed(a)]
        assert realimages.disk_sha256(da) == realimages.disk_sha256(db)
        kinds = {e.kind.value for e in da.extents()}
        layers = {e.layer for e in da.extents() if e.layer is not None}
    # Data from every layer, explicit zeros, and never-written ranges.
    assert {"data", "zero", "unallocated"} <= kinds or {"data", "unallocated"} <= kinds
    assert layers == {0, 1, 2, 3}
    # Bloated: the files add up to more than the disk holds.
    assert sum(p.stat().st_size for p in a) > 16 << 20


def test_demo_command_remediates_and_shrinks(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    r = run_cli("demo", "--dir", folder, "--size", "16M", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["after"]["allocated_bytes"] < out["before"]["allocated_bytes"]
    assert out["result"]["type"] == "fixed"
    assert out["result"]["virtual_size"] == 16 << 20
    assert len(out["before"]["files"]) == 4
    # The result took the base disk's name; the chain is archived, content identical.
    reference = demo.make_bloated_chain(tmp_path / "ref", size=16 << 20)
    with vhdlib.open(folder / "base.vhd") as result, vhdlib.open(reference[-1]) as chain:
        assert len(result.layers) == 1
        assert realimages.disk_sha256(result) == realimages.disk_sha256(chain)
    # Human output on a non-terminal: plain progress lines and the before/after table.
    r = run_cli("demo", "--dir", tmp_path / "demo2", "--size", "8M")
    assert r.code == 0, r.err
    assert "before" in r.out and "after" in r.out and "less space" in r.out
    assert "remediate" in r.err and "\r" not in r.err
    # A folder that already holds something is refused.
    assert_clean_error(run_cli("demo", "--dir", folder), 2)
