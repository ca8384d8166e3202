"""ext2/3/4 allocation maps against dumpe2fs, across features, and every keep-whole case."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan
from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError
from vhdlib.volume.ext4.checksums import crc32c_raw
from vhdlib.volume.ext4.superblock import Superblock

FEATURES = {
    "ext4-default": ["-t", "ext4"],
    "ext4-1k-blocks": ["-t", "ext4", "-b", "1024"],
    "ext4-gdt-csum": ["-t", "ext4", "-O", "^metadata_csum,uninit_bg"],
    "ext4-32bit": ["-t", "ext4", "-O", "^64bit,^metadata_csum,uninit_bg"],
    "ext4-meta-bg": ["-t", "ext4", "-O", "meta_bg,^resize_inode"],
    "ext4-meta-bg-1k": ["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
    "ext4-bigalloc": ["-t", "ext4", "-O", "bigalloc", "-C", "16384"],
    "ext4-bigalloc-4k": ["-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "65536"],
    "ext4-no-flex-bg": ["-t", "ext4", "-O", "^flex_bg"],
    "ext4-small-groups": ["-t", "ext4", "-b", "1024", "-g", "1024", "-G", "4"],
    "ext4-sparse-super2": ["-t", "ext4", "-O", "sparse_super2"],
    "ext4-csum-seed": ["-t", "ext4", "-O", "metadata_csum_seed"],
    "ext4-no-journal": ["-t", "ext4", "-O", "^has_journal"],
    "ext3": ["-t", "ext3"],
    "ext2": ["-t", "ext2"],
    "ext2-no-sparse": ["-t", "ext2", "-O", "^sparse_super,^resize_inode"],
}


def build(tmp_path: Path, options: list[str], size: int = 48 * guests.MiB) -> Path:
    """A volume over stale bytes with three files, one of them then deleted."""
    image = tmp_path / "ext.img"
    guests.stale(image, size)
    src = guests.files(tmp_path / "src", {"keep": 3 * guests.MiB + 123, "gone": 5 * guests.MiB,
                                          "small": 4000})
    guests.mke2fs(image, *options, src=src)
    guests.debugfs_w(image, "rm gone")
    return image


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_free_ranges_equal_dumpe2fs(tmp_path: Path, name: str) -> None:
    image = build(tmp_path, FEATURES[name])
    guests.run("e2fsck", "-fn", image)  # the volume we read is sound by e2fsprogs' rules
    with FileDisk(image) as disk:
        vmap = scan(disk)
    (part,) = vmap.partitions
    assert part.kept is None, part.kept
    assert part.scheme == "none"
    assert list(part.free_ranges) == guests.dumpe2fs_free(image)
    assert part.file_system == ("ext4" if name.startswith("ext4") else name[:4])
    # The deleted file's 5 MiB became free: more than a file system holding it would have.
    assert part.free_bytes > 5 * guests.MiB


@pytest.mark.parametrize("name", ["ext4-default", "ext4-gdt-csum", "ext4-small-groups"])
def test_block_uninit_groups_read_as_the_kernel_does(tmp_path: Path, name: str) -> None:
    """Groups mke2fs leaves BLOCK_UNINIT have no bitmap on disk (stale bytes where it would
    be): their free clusters come from the layout, and must still equal dumpe2fs's."""
    image = build(tmp_path, FEATURES[name], size=128 * guests.MiB)
    listing = guests.run("dumpe2fs", image).decode()
    assert listing.count("BLOCK_UNINIT") >= 2
    with FileDisk(image) as disk:
        (part,) = scan(disk).partitions
    assert part.kept is None, part.kept
    assert list(part.free_ranges) == guests.dumpe2fs_free(image)


def test_bigalloc_cluster_size(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-bigalloc"])
    with FileDisk(image) as disk:
        (part,) = scan(disk).partitions
    assert part.cluster_size == 16384
    assert all(s % 16384 == 0 and e % 16384 == 0 for s, e in part.free_ranges)


def _sb_field(image: Path, offset: int, fmt: str, value: int) -> None:
    """Set a superblock field and, when metadata_csum is on, re-sign the superblock the way
    the kernel does, so the state (not a checksum) is what the reader reacts to."""
    raw = bytearray(guests.peek(image, 1024, 1024))
    struct.pack_into(fmt, raw, offset, value)
    if struct.unpack_from("<I", raw, 0x64)[0] & 0x400:
        struct.pack_into("<I", raw, 0x3FC, crc32c_raw(0xFFFFFFFF, bytes(raw[:0x3FC])))
    guests.patch(image, 1024, bytes(raw))


def _kept(image: Path) -> str:
    with FileDisk(image) as disk:
        (part,) = scan(disk).partitions
    assert part.free_ranges == ()
    assert part.kept is not None
    return part.kept


def test_needs_recovery_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    guests.debugfs_w(image, "feature needs_recovery")
    assert "needs_recovery" in _kept(image)


def test_error_state_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    guests.debugfs_w(image, "ssv state 3")  # VALID_FS | ERROR_FS
    assert "errors" in _kept(image)


def test_orphan_list_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    guests.debugfs_w(image, "ssv last_orphan 12")
    assert "orphan" in _kept(image)


def test_not_cleanly_unmounted_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext2"])
    guests.debugfs_w(image, "ssv state 0")
    assert "cleanly" in _kept(image)


def test_unknown_incompat_feature_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    incompat = struct.unpack("<I", guests.peek(image, 1024 + 0x60, 4))[0]
    _sb_field(image, 0x60, "<I", incompat | 0x80000000)
    assert "incompatible features" in _kept(image)


def test_superblock_checksum_mismatch_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    raw = guests.peek(image, 1024 + 0x78, 1)  # s_volume_name, covered by the checksum
    guests.patch(image, 1024 + 0x78, bytes([raw[0] ^ 0x55]))
    with pytest.raises(VolumeChecksumError):
        Superblock.parse(guests.peek(image, 1024, 1024))
    assert "checksum" in _kept(image)


def _first_bitmap_block(image: Path) -> tuple[int, int]:
    """(block size, block bitmap block of group 0) as dumpe2fs prints them."""
    import re
    out = guests.run("dumpe2fs", image).decode()
    bsize = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    bb = int(re.search(r"Block bitmap at (\d+)", out).group(1))  # type: ignore[union-attr]
    return bsize, bb


@pytest.mark.parametrize("name", ["ext4-default", "ext2"])
def test_bitmap_damage_is_kept(tmp_path: Path, name: str) -> None:
    """metadata_csum catches it by checksum, ext2 by the group's free count."""
    image = build(tmp_path, FEATURES[name])
    bsize, bb = _first_bitmap_block(image)
    at = bb * bsize + 40  # inside the used metadata/file area of group 0
    guests.patch(image, at, bytes([guests.peek(image, at, 1)[0] ^ 0x0F]))
    proc_ok = True
    try:
        guests.run("e2fsck", "-fn", image)
    except AssertionError:
        proc_ok = False
    assert not proc_ok  # e2fsck agrees the volume is damaged
    reason = _kept(image)
    assert ("checksum" in reason) if name == "ext4-default" else ("free" in reason)


def test_descriptor_checksum_mismatch_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-gdt-csum"])
    sb = Superblock.parse(guests.peek(image, 1024, 1024))
    desc = (sb.first_data_block + 1) * sb.block_size
    guests.patch(image, desc + 0x10, b"\x77\x00")  # bg_used_dirs_count_lo of group 0
    reason = _kept(image)
    assert "descriptor checksum" in reason


def test_volume_larger_than_partition_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    with open(image, "r+b") as f:
        f.truncate(40 * guests.MiB)
    assert "exceeds" in _kept(image)


def test_structure_errors_are_typed(tmp_path: Path) -> None:
    raw = bytearray(1024)
    with pytest.raises(VolumeStructureError):
        Superblock.parse(bytes(raw))
    struct.pack_into("<H", raw, 0x38, 0xEF53)
    with pytest.raises(VolumeStructureError):
        Superblock.parse(bytes(raw))
