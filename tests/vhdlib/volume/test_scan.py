"""Whole guest disks: a GPT disk with NTFS, ext4 and a gap, as raw and as VHD/VHDX made by
qemu-img, and real images from other projects."""

from __future__ import annotations

import importlib
import logging
import struct
import subprocess
from pathlib import Path

import pytest

import vhdlib
from tests.conftest import require_tool
from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan
from vhdlib.volume.fsmap import FsMap
from vhdlib.volume.ntfs import volume as ntfs

MiB = guests.MiB
# The module, not the function vhdlib.volume re-exports under the same name.
scan_module = importlib.import_module("vhdlib.volume.scan")
NTFS_AT, NTFS_LEN = 1 * MiB, 40 * MiB
EXT_AT, EXT_LEN = 42 * MiB, 32 * MiB  # 1 MiB gap after the NTFS partition
SIZE = 80 * MiB


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A GPT disk over stale bytes; each volume built by its own tools, then placed."""
    tmp = tmp_path_factory.mktemp("guest")
    disk = tmp / "disk.img"
    guests.stale(disk, SIZE, seed=7)
    guests.run("sgdisk", "-o", "-n", f"1:{NTFS_AT // 512}:+{NTFS_LEN // 512}",
               "-t", "1:0700", "-n", f"2:{EXT_AT // 512}:+{EXT_LEN // 512}",
               "-t", "2:8300", disk)
    src = guests.files(tmp / "src", {"big": 6 * MiB, "gone": 9 * MiB, "tiny": 10})
    ntfs = tmp / "ntfs.img"
    guests.stale(ntfs, NTFS_LEN, seed=3)
    guests.mkntfs(ntfs, 4096, "-p", str(NTFS_AT // 512))
    guests.ntfscp(ntfs, src / "big", "big")
    ext = tmp / "ext.img"
    guests.stale(ext, EXT_LEN, seed=5)
    guests.mke2fs(ext, "-t", "ext4", src=src)
    guests.debugfs_w(ext, "rm gone")
    guests.place(disk, NTFS_AT, ntfs)
    guests.place(disk, EXT_AT, ext)
    expected = {
        1: [(NTFS_AT + s, NTFS_AT + e) for s, e in guests.ntfs_free(ntfs)],
        2: [(EXT_AT + s, EXT_AT + e) for s, e in guests.dumpe2fs_free(ext)],
    }
    return {"disk": disk, "expected": expected, "tmp": tmp}


def _check(vmap: vhdlib.volume.VolumeMap, expected: dict[int, list]) -> None:  # type: ignore[name-defined]
    assert vmap.scheme == "gpt" and vmap.kept is None
    by_number = {p.number: p for p in vmap.partitions}
    assert by_number[1].file_system == "ntfs" and by_number[2].file_system == "ext4"
    for number, ranges in expected.items():
        assert list(by_number[number].free_ranges) == ranges
    # Nothing outside the partitions is ever free: not the GPT, the gap, the backup GPT.
    for start, end in vmap.free_ranges:
        assert any(p.start <= start and end <= p.end for p in vmap.partitions)


def test_raw_disk(guest: dict) -> None:
    with FileDisk(guest["disk"]) as disk:
        _check(scan(disk), guest["expected"])


@pytest.mark.parametrize(("fmt", "opts"), [
    ("vpc", "subformat=dynamic"), ("vhdx", "subformat=dynamic,block_size=1M")])
def test_through_vhdlib_on_qemu_images(guest: dict, fmt: str, opts: str) -> None:
    require_tool("qemu-img")
    out = guest["tmp"] / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, "-o", opts,
                    str(guest["disk"]), str(out)], check=True)
    with vhdlib.open(out) as disk:
        vmap = scan(disk)
        # A VHD's virtual size may be rounded up to its CHS geometry: still a valid GPT.
        _check(vmap, guest["expected"])


@pytest.mark.parametrize("block", [512 * 1024, MiB, 2 * MiB])
def test_reclaimable_blocks_lie_wholly_in_free_clusters(guest: dict, block: int) -> None:
    with FileDisk(guest["disk"]) as disk:
        vmap = scan(disk)
    free = [r for ranges in guest["expected"].values() for r in ranges]
    blocks = vmap.reclaimable_blocks(block)
    assert blocks  # the deleted 9 MiB and the empty NTFS space hold whole blocks
    for b in blocks:
        assert any(s <= b * block and (b + 1) * block <= e for s, e in free), b
        assert vmap.droppable(b * block, block)
    # ... and every block wholly inside one tool-reported free range is found.
    naive = {b for s, e in free for b in range(-(-s // block), e // block)}
    assert naive <= set(blocks)
    assert not vmap.droppable(0, block)  # the protective MBR and GPT


def test_to_dict_reports_each_partition(guest: dict) -> None:
    with FileDisk(guest["disk"]) as disk:
        report = scan(disk).to_dict(block_size=MiB)
    assert [p["file_system"] for p in report["partitions"]] == ["ntfs", "ext4"]
    assert all(p["kept_whole"] is None and p["reclaimable_blocks"] > 0
               for p in report["partitions"])
    assert report["reclaimable_blocks"] == sum(p["reclaimable_blocks"]
                                               for p in report["partitions"])


def test_real_ext2_without_partition_table(real_image) -> None:
    """dfvfs's ext2.vhd (made by qemu-img from a raw ext2): free ranges equal dumpe2fs's
    reading of the same bytes."""
    path = real_image("dfvfs/ext2.vhd")
    raw = Path(str(path)).parent / "ext2-from-vhd.raw"
    with vhdlib.open(path) as disk:
        vmap = scan(disk)
        if not raw.exists():
            raw.write_bytes(disk.read(0, disk.virtual_size))
    (part,) = vmap.partitions
    assert (vmap.scheme, part.file_system, part.kept) == ("none", "ext2", None)
    assert list(part.free_ranges) == guests.dumpe2fs_free(raw)


@pytest.mark.parametrize(("name", "reason"), [
    ("discutils/lvm2.vhdx", "LVM"),
    ("discutils/xfs.vhdx", "XFS"),
    ("discutils/swap.vhdx", "Linux swap"),
])
def test_real_images_kept_whole(real_image, name: str, reason: str) -> None:
    with vhdlib.open(real_image(name)) as disk:
        vmap = scan(disk)
    assert vmap.free_ranges == []
    assert all(p.kept and reason in p.kept for p in vmap.partitions), vmap.partitions


@pytest.mark.parametrize("error", [struct.error("unpack_from requires a buffer of at least "
                                                "20 bytes"), IndexError("index out of range"),
                                   ValueError("bad value")])
def test_unchecked_reader_error_keeps_the_partition_and_is_logged(
        guest: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        error: Exception) -> None:
    """A decode the reader did not bound first (a parser bug on damaged bytes) keeps the
    partition whole, names the file system, and logs the traceback; the other partition
    is still read."""
    def broken(_win: object) -> FsMap:
        raise error

    monkeypatch.setattr(scan_module, "READERS", (
        ("ntfs", ntfs.probe, broken), *scan_module.READERS[1:]))
    with caplog.at_level(logging.ERROR, logger="vhdlib.volume.scan"), \
            FileDisk(guest["disk"]) as disk:  # type: ignore[arg-type]
        first, second = scan(disk).partitions
    assert first.kept == f"ntfs: damaged structure ({type(error).__name__}: {error})"
    assert first.free_ranges == ()
    assert second.kept is None and second.free_ranges
    (logged,) = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert logged.exc_info is not None and logged.exc_info[1] is error
    assert "partition 1: ntfs: unchecked structure" in logged.getMessage()
