"""Partitions owned by a volume manager, RAID or Storage Spaces are kept whole, even when
a readable file system sits at their start."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan

MiB = guests.MiB
PART_AT, PART_LEN = MiB, 30 * MiB


def disk_with_ext4(tmp_path: Path, gpt_type: str | None = None,
                   mbr_type: str | None = None) -> Path:
    """A disk whose one partition holds a valid ext4 volume; the table sets its type."""
    disk = tmp_path / "disk.img"
    guests.stale(disk, 40 * MiB)
    if gpt_type:
        guests.run("sgdisk", "-o", "-n", f"1:{PART_AT // 512}:+{PART_LEN // 512}",
                   "-t", f"1:{gpt_type}", disk)
    else:
        script = f"label: dos\nstart={PART_AT // 512}, size={PART_LEN // 512}, type={mbr_type}\n"
        guests.run("sfdisk", "-q", disk, input=script.encode())
    ext = tmp_path / "ext.img"
    guests.stale(ext, PART_LEN)
    guests.mke2fs(ext, "-t", "ext4")
    guests.place(disk, PART_AT, ext)
    return disk


def _reason(disk: Path) -> str:
    with FileDisk(disk) as d:
        (part,) = scan(d).partitions
    assert part.free_ranges == () and part.kept is not None
    return part.kept


def test_plain_linux_partition_is_read(tmp_path: Path) -> None:
    """The control: the same disk with an ordinary type is reclaimable."""
    with FileDisk(disk_with_ext4(tmp_path, gpt_type="8300")) as d:
        (part,) = scan(d).partitions
    assert part.kept is None and part.free_bytes > 0


@pytest.mark.parametrize(("gpt_type", "reason"), [
    ("8e00", "LVM"),
    ("fd00", "MD RAID"),
    ("E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D", "Storage Spaces"),
    ("AF9B60A0-1431-4F62-BC68-3311714A69AD", "LDM"),
    ("5808C8AA-7E8F-42E0-85D2-E1E90434CFB3", "LDM"),
])
def test_gpt_owner_types_are_kept(tmp_path: Path, gpt_type: str, reason: str) -> None:
    assert reason in _reason(disk_with_ext4(tmp_path, gpt_type=gpt_type))


@pytest.mark.parametrize(("mbr_type", "reason"), [
    ("8e", "LVM"), ("42", "LDM"), ("fd", "MD RAID")])
def test_mbr_owner_types_are_kept(tmp_path: Path, mbr_type: str, reason: str) -> None:
    assert reason in _reason(disk_with_ext4(tmp_path, mbr_type=mbr_type))


def test_lvm_label_is_kept(tmp_path: Path) -> None:
    disk = disk_with_ext4(tmp_path, gpt_type="8300")
    label = b"LABELONE" + struct.pack("<QII", 1, 0, 32) + b"LVM2 001"
    guests.patch(disk, PART_AT + 512, label)  # sector 1 of the partition
    assert "LVM" in _reason(disk)


@pytest.mark.parametrize("offset", [0, 4096, "1.0", "0.90"])
def test_md_superblock_is_kept(tmp_path: Path, offset: object) -> None:
    disk = disk_with_ext4(tmp_path, gpt_type="8300")
    if offset == "1.0":
        at = ((PART_LEN // 512 - 16) & ~7) * 512
    elif offset == "0.90":
        at = (PART_LEN & ~0xFFFF) - 0x10000
    else:
        assert isinstance(offset, int)
        at = offset
    guests.patch(disk, PART_AT + at, struct.pack("<I", 0xA92B4EFC))
    assert "MD RAID" in _reason(disk)
