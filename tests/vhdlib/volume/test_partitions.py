"""Partition tables written by sgdisk and sfdisk, read back; damaged ones kept."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan
from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError
from vhdlib.volume.partitions import read_table

MiB = guests.MiB


def gpt_disk(tmp_path: Path, size: int = 64 * MiB) -> Path:
    disk = tmp_path / "gpt.img"
    guests.stale(disk, size)
    guests.run("sgdisk", "-o", "-n", "1:2048:+16M", "-t", "1:0700", "-c", "1:data",
               "-n", "2:0:+20M", "-t", "2:8300", "-n", "3:0:0", "-t", "3:8e00", disk)
    return disk


def sfdisk_parts(disk: Path) -> list[tuple[int, int, str]]:
    """(start byte, length, type) of each partition as sfdisk reads them."""
    table = json.loads(guests.run("sfdisk", "--json", disk))["partitiontable"]
    return [(p["start"] * 512, p["size"] * 512, p["type"]) for p in table["partitions"]]


def test_gpt_matches_sfdisk(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path)
    with FileDisk(disk) as d:
        table = read_table(d)
    assert table.scheme == "gpt"
    assert [(p.start, p.length, p.type.upper()) for p in table.partitions] == sfdisk_parts(disk)
    assert table.partitions[0].name == "data"
    assert table.notes == ()


def _last_lba(disk: Path) -> int:
    return disk.stat().st_size // 512 - 1


def test_primary_gpt_damaged_uses_backup(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path)
    with FileDisk(disk) as d:
        expected = read_table(d).partitions
    guests.patch(disk, 512 + 0x28, b"\x99")  # first usable LBA: header CRC no longer matches
    with FileDisk(disk) as d:
        table = read_table(d)
    assert table.partitions == expected
    assert "backup used" in table.notes[0]


def test_primary_entries_damaged_uses_backup(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path)
    guests.patch(disk, 2 * 512 + 0x20, b"\x55")  # entry 1 starting LBA: array CRC fails
    with FileDisk(disk) as d:
        table = read_table(d)
    assert table.partitions[0].start == 2048 * 512
    assert "CRC-32" in table.notes[0]


def test_both_gpt_headers_damaged_keeps_the_disk(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path)
    guests.patch(disk, 512 + 0x28, b"\x99")
    guests.patch(disk, _last_lba(disk) * 512 + 0x28, b"\x99")
    with FileDisk(disk) as d, pytest.raises(VolumeStructureError, match="both damaged"):
        read_table(d)
    with pytest.raises(VolumeChecksumError):
        from vhdlib.volume.gpt import GptHeader
        GptHeader.parse(guests.peek(disk, 512, 512), 1)
    with FileDisk(disk) as d:
        vmap = scan(d)
    assert vmap.partitions == () and vmap.free_ranges == []
    assert vmap.kept is not None and "both damaged" in vmap.kept


def test_backup_damage_is_noted(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path)
    guests.patch(disk, _last_lba(disk) * 512 + 0x28, b"\x99")
    with FileDisk(disk) as d:
        table = read_table(d)
    assert len(table.partitions) == 3
    assert "backup GPT damaged" in table.notes[0]


def _resign_gpt_entries(disk: Path, lba: int = 1) -> None:
    """Recompute the entry-array and header CRCs of the GPT header at ``lba``."""
    header = bytearray(guests.peek(disk, lba * 512, 512))
    entry_lba, count, size = struct.unpack_from("<QII", header, 0x48)
    array = guests.peek(disk, entry_lba * 512, count * size)
    struct.pack_into("<I", header, 0x58, zlib.crc32(array))
    struct.pack_into("<I", header, 0x10, 0)
    struct.pack_into("<I", header, 0x10, zlib.crc32(bytes(header[:92])))
    guests.patch(disk, lba * 512, bytes(header))


def test_overlapping_gpt_entries_keep_the_disk(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path)
    # Entry 2 starts inside entry 1; both headers re-signed, so only the overlap is wrong.
    for lba, entries in ((1, 2), (_last_lba(disk), None)):
        header = guests.peek(disk, lba * 512, 512)
        entry_lba = entries or struct.unpack_from("<Q", header, 0x48)[0]
        guests.patch(disk, entry_lba * 512 + 128 + 0x20, struct.pack("<Q", 4096))
        _resign_gpt_entries(disk, lba)
    with FileDisk(disk) as d:
        vmap = scan(d)
    assert vmap.kept is not None and "overlap" in vmap.kept


def mbr_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "mbr.img"
    guests.stale(disk, 64 * MiB)
    script = ("label: dos\n"
              "start=2048, size=16M, type=7\n"
              "size=8M, type=83\n"
              "type=5\n"
              "size=10M, type=83\n"
              "size=6M, type=7\n"
              "type=83\n")
    guests.run("sfdisk", "-q", disk, input=script.encode())
    return disk


def test_mbr_with_logicals_matches_sfdisk(tmp_path: Path) -> None:
    disk = mbr_disk(tmp_path)
    with FileDisk(disk) as d:
        table = read_table(d)
    assert table.scheme == "mbr"
    expected = [p for p in sfdisk_parts(disk) if p[2] != "5"]  # the extended container
    assert [(p.start, p.length, p.type) for p in table.partitions] == [
        (s, n, f"0x{int(t, 16):02x}") for s, n, t in expected]
    assert [p.number for p in table.partitions] == [1, 2, 5, 6, 7]


def test_ebr_loop_keeps_the_disk(tmp_path: Path) -> None:
    disk = mbr_disk(tmp_path)
    # Point the first EBR's link back at itself (relative 0 is the extended start).
    ext_start = struct.unpack_from("<I", guests.peek(disk, 0x1BE + 2 * 16 + 8, 4))[0]
    guests.patch(disk, ext_start * 512 + 0x1BE + 16 + 8, struct.pack("<I", 0))
    with FileDisk(disk) as d:
        vmap = scan(d)
    assert vmap.kept is not None and "EBR" in vmap.kept


def _ebr_links(disk: Path) -> tuple[int, int, int]:
    """The extended partition's start and size (sectors) and the second EBR's LBA."""
    ext_start, ext_size = struct.unpack_from("<II", guests.peek(disk, 0x1BE + 2 * 16 + 8, 8))
    link = struct.unpack_from("<I", guests.peek(disk, ext_start * 512 + 0x1BE + 16 + 8, 4))[0]
    return ext_start, ext_size, ext_start + link


@pytest.mark.parametrize(("which", "relative", "reason"), [
    # The first EBR's link just past the extended partition's end, far past the disk's.
    ("first", "size", "EBR link points outside the extended partition"),
    ("first", 0xFFFFFFFF, "EBR link points outside the extended partition"),
    # The second EBR's link back at itself: inside, but a loop.
    ("second", "self", "EBR chain loops"),
])
def test_a_bad_ebr_link_keeps_the_disk_with_the_reason(tmp_path: Path, which: str,
                                                       relative: object, reason: str) -> None:
    disk = mbr_disk(tmp_path)
    ext_start, ext_size, second = _ebr_links(disk)
    value = {"size": ext_size, "self": second - ext_start}.get(str(relative), relative)
    ebr = ext_start if which == "first" else second
    guests.patch(disk, ebr * 512 + 0x1BE + 16 + 8, struct.pack("<I", value))
    with FileDisk(disk) as d:
        with pytest.raises(VolumeStructureError, match=reason):
            read_table(d)
        vmap = scan(d)
    assert vmap.kept is not None and reason in vmap.kept
    assert not vmap.reclaimable_blocks(MiB)


def test_mbr_partition_beyond_the_disk_keeps_it(tmp_path: Path) -> None:
    disk = mbr_disk(tmp_path)
    guests.patch(disk, 0x1BE + 12, struct.pack("<I", 10**6))
    with FileDisk(disk) as d, pytest.raises(VolumeStructureError):
        read_table(d)


def test_no_table_and_blank_disk(tmp_path: Path) -> None:
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(MiB))
    with FileDisk(disk) as d:
        vmap = scan(d)
    (part,) = vmap.partitions
    assert vmap.scheme == "none" and part.kept is not None and "blank" in part.kept


# --- the table's own sectors inside a partition (sfdisk/sgdisk cannot write these, so the
# table bytes are edited here and sfdisk, which follows the same links, reads them back) ---

def _wholly_free(fs: Path, start: int, length: int) -> bool:
    return any(s <= start and start + length <= e for s, e in guests.dumpe2fs_free(fs))


def ebr_in_logical_disk(tmp_path: Path) -> tuple[Path, int]:
    """:func:`mbr_disk` with an ext4 in logical 5 and the EBR of logical 6 moved into that
    file system's free space, 6 MiB into it; returns the disk and the EBR's LBA."""
    disk = mbr_disk(tmp_path)
    ext_start, _size, second = _ebr_links(disk)
    l5_start = ext_start + struct.unpack_from(
        "<I", guests.peek(disk, ext_start * 512 + 0x1BE + 8, 4))[0]
    fs = tmp_path / "l5.img"
    fs.write_bytes(guests.peek(disk, l5_start * 512, 10 * MiB))
    guests.mke2fs(fs, "-t", "ext4")
    guests.place(disk, l5_start * 512, fs)
    moved = l5_start + 6 * MiB // 512
    assert _wholly_free(fs, (moved - l5_start) * 512, MiB)
    before = sfdisk_parts(disk)
    # The EBR keeps its link; its logical entry is relative to the EBR, so it follows it.
    ebr = bytearray(guests.peek(disk, second * 512, 512))
    rel = struct.unpack_from("<I", ebr, 0x1BE + 8)[0]
    struct.pack_into("<I", ebr, 0x1BE + 8, rel + second - moved)
    guests.patch(disk, moved * 512, bytes(ebr))
    guests.patch(disk, ext_start * 512 + 0x1BE + 16 + 8, struct.pack("<I", moved - ext_start))
    assert sfdisk_parts(disk) == before  # Linux still sees logicals 5, 6 and 7 unchanged
    return disk, moved


def test_an_ebr_inside_a_logical_partition_keeps_the_disk(tmp_path: Path) -> None:
    disk, ebr = ebr_in_logical_disk(tmp_path)
    with FileDisk(disk) as d:
        vmap = scan(d)
    assert vmap.partitions == () and vmap.free_ranges == []
    assert vmap.kept is not None and "partition 5 (bytes" in vmap.kept
    assert f"covers the EBR at LBA {ebr}" in vmap.kept


def test_a_primary_covering_the_first_ebr_keeps_the_disk(tmp_path: Path) -> None:
    disk = mbr_disk(tmp_path)
    ext_start, _size, _second = _ebr_links(disk)
    # Partition 2 grows by one sector onto the first EBR; logical 5 starts 2048 further on.
    size = struct.unpack_from("<I", guests.peek(disk, 0x1BE + 16 + 12, 4))[0]
    guests.patch(disk, 0x1BE + 16 + 12, struct.pack("<I", size + 1))
    assert sfdisk_parts(disk)[1][1] == (size + 1) * 512
    with FileDisk(disk) as d, pytest.raises(
            VolumeStructureError, match=f"partition 2 .* covers the EBR at LBA {ext_start}$"):
        read_table(d)


def _edit_gpt(disk: Path, lba: int, header: dict[int, bytes],
              entries: dict[int, bytes] | None = None) -> None:
    """Patch the GPT header at ``lba`` (offset: bytes) and its entry array, then re-sign."""
    for at, data in header.items():
        guests.patch(disk, lba * 512 + at, data)
    entry_lba = struct.unpack_from("<Q", guests.peek(disk, lba * 512 + 0x48, 8))[0]
    for at, data in (entries or {}).items():
        guests.patch(disk, entry_lba * 512 + at, data)
    _resign_gpt_entries(disk, lba)


def _run_to_last_lba(disk: Path, lba: int, entry: int) -> None:
    """Set LastUsableLBA of the header at ``lba`` and entry ``entry``'s end to the disk's
    last LBA, where the backup header lives."""
    last = struct.pack("<Q", _last_lba(disk))
    _edit_gpt(disk, lba, {0x30: last}, {(entry - 1) * 128 + 0x28: last})


def gpt_over_backup_disk(tmp_path: Path) -> Path:
    """One GPT partition whose ext4 runs to the disk's last LBA (primary header and entry
    edited, backup left as sgdisk wrote it, in that ext4's free space)."""
    disk = tmp_path / "gpt-over.img"
    guests.stale(disk, 64 * MiB)
    guests.run("sgdisk", "-o", "-n", "1:2048:0", "-t", "1:8300", disk)
    tail = guests.peek(disk, (_last_lba(disk) - 32) * 512, 33 * 512)
    fs = tmp_path / "ext.img"
    fs.write_bytes(guests.peek(disk, MiB, 63 * MiB))
    guests.mke2fs(fs, "-t", "ext4")
    guests.place(disk, MiB, fs)
    guests.patch(disk, (_last_lba(disk) - 32) * 512, tail)
    assert _wholly_free(fs, 62 * MiB, MiB)
    _run_to_last_lba(disk, 1, 1)
    assert sfdisk_parts(disk)[0] == (MiB, 63 * MiB, "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    return disk


def test_a_gpt_partition_over_the_backup_keeps_the_disk(tmp_path: Path) -> None:
    disk = gpt_over_backup_disk(tmp_path)
    with FileDisk(disk) as d:
        vmap = scan(d)
    assert vmap.partitions == () and vmap.free_ranges == []
    assert vmap.kept is not None and "disagree on the last usable LBA" in vmap.kept
    assert f"{_last_lba(disk)} and {_last_lba(disk) - 33}" in vmap.kept


@pytest.mark.parametrize(("edit", "reason"), [
    # Both headers agree that partition 3 and the usable area run to the last LBA.
    ("both to the end", "usable LBAs 34..{last} cover the backup GPT entry array at LBA "
                        "{array}"),
    # Both headers' usable area starts on the primary entry array.
    ("first usable 2", "usable LBAs 2..{usable} cover the primary GPT entry array at LBA 2"),
    # Backup damaged: the primary still names the backup header's LBA, inside its range.
    ("backup damaged", "usable LBAs 34..{last} cover the backup GPT header at LBA {last}"),
])
def test_a_usable_area_over_the_gpt_itself_keeps_the_disk(tmp_path: Path, edit: str,
                                                          reason: str) -> None:
    disk = gpt_disk(tmp_path)
    last = _last_lba(disk)
    if edit == "both to the end":
        _run_to_last_lba(disk, 1, 3)
        _run_to_last_lba(disk, last, 3)
    elif edit == "first usable 2":
        for lba in (1, last):
            _edit_gpt(disk, lba, {0x28: struct.pack("<Q", 2)})
    else:
        _run_to_last_lba(disk, 1, 3)
        guests.patch(disk, last * 512, b"NOT GPT!")
    assert sfdisk_parts(disk)  # util-linux still reads the table
    with FileDisk(disk) as d:
        vmap = scan(d)
    assert vmap.partitions == ()
    assert vmap.kept is not None and reason.format(
        last=last, array=last - 32, usable=last - 33) in vmap.kept


@pytest.mark.parametrize(("field", "header", "entries"), [
    ("first usable LBA", {0x28: struct.pack("<Q", 40)}, None),
    ("last usable LBA", {0x30: struct.pack("<Q", 100000)}, None),
    ("disk GUID", {0x38: b"\x42"}, None),
    ("entry count", {0x50: struct.pack("<I", 64)}, None),
    ("entry array CRC-32", {}, {0x38: "renamed".encode("utf-16-le")}),
])
def test_valid_gpt_headers_that_disagree_keep_the_disk(tmp_path: Path, field: str,
                                                        header: dict[int, bytes],
                                                        entries: dict[int, bytes] | None
                                                        ) -> None:
    disk = gpt_disk(tmp_path)
    _edit_gpt(disk, _last_lba(disk), header, entries)  # the backup, still valid
    # gdisk's own check sees it too (it says "No problems found" of the unedited disk).
    proc = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert "Problem:" in out or "Backup partition table: ERROR" in out, out
    with FileDisk(disk) as d:
        vmap = scan(d)
    assert vmap.partitions == ()
    assert vmap.kept is not None and f"GPT headers disagree on the {field}" in vmap.kept


def test_a_gpt_entry_outside_the_usable_area_keeps_the_disk(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path)
    last = struct.pack("<Q", _last_lba(disk) - 20)  # into the backup entry array
    for lba in (1, _last_lba(disk)):
        _edit_gpt(disk, lba, {}, {2 * 128 + 0x28: last})
    with FileDisk(disk) as d, pytest.raises(VolumeStructureError,
                                            match=r"GPT entry 3: .* outside the usable area"):
        read_table(d)
