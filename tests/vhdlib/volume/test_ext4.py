"""ext2/3/4 allocation maps against dumpe2fs, across features, and every keep-whole case."""

from __future__ import annotations

import os
import random
import re
import struct
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan
from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError
from vhdlib.volume.ext4 import inode
from vhdlib.volume.ext4.bitmap import VolumeBitmap
from vhdlib.volume.ext4.checksums import crc16, crc32c_raw
from vhdlib.volume.ext4.superblock import Superblock
from vhdlib.volume.ranges import first_clear

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
    "ext4-inline-data": ["-t", "ext4", "-O", "inline_data"],
    "ext3": ["-t", "ext3"],
    "ext2": ["-t", "ext2"],
    "ext2-no-sparse": ["-t", "ext2", "-O", "^sparse_super,^resize_inode"],
}


def _sparse(path: Path, pieces: int = 12) -> None:
    """4 KiB of data every 64 KiB: mke2fs -d keeps the holes, so the file has one extent
    per piece (more than i_block's four: an extent tree of depth 1)."""
    with open(path, "wb") as f:
        for i in range(pieces):
            f.seek(i * 65536)
            f.write(os.urandom(4096))


def build(tmp_path: Path, options: list[str], size: int = 48 * guests.MiB) -> Path:
    """A volume over stale bytes with files of every kind the inode walk tells apart: a
    file large enough for a double indirect block with 1 KiB blocks ("keep"), a sparse
    fragmented one ("frag"), small ones (inline with inline_data), fast and slow
    symlinks, device and fifo nodes, in-inode and block extended attributes, and a
    deleted file."""
    image = tmp_path / "ext.img"
    guests.stale(image, size)
    src = guests.files(tmp_path / "src", {"keep": 3 * guests.MiB + 123, "gone": 5 * guests.MiB,
                                          "small": 4000, "tiny": 40})
    _sparse(src / "frag")
    (src / "fast").symlink_to("keep")
    (src / "slow").symlink_to("x" * 100)  # longer than i_block's 60 bytes: a data block
    value = tmp_path / "xattr"
    value.write_bytes(os.urandom(700))  # too big for the inode: an xattr block
    guests.mke2fs(image, *options, src=src)
    guests.debugfs_w(image, "rm gone", "mknod null c 1 3", "mknod pipe p",
                     f"ea_set -f {value} small user.big", "ea_set keep user.tiny x")
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


# --- the blocks in-use inodes own (vhdlib/volume/ext4/fileblocks.py) -------------------

#: (variant, file, which of its blocks as debugfs stat lists them) a damaged bitmap frees.
#: "keep"'s last data block hangs under its double indirect block with 1 KiB blocks;
#: "frag" has an extent tree of depth 1 (ETB0: its leaf block).
FREED = [
    ("ext2", "keep", "data"), ("ext2", "keep", "IND"), ("ext2", "keep", "DIND"),
    ("ext2", "small", "xattr"), ("ext2", "slow", "data"),
    ("ext4-gdt-csum", "keep", "data"), ("ext4-gdt-csum", "frag", "data"),
    ("ext4-gdt-csum", "frag", "ETB0"), ("ext4-gdt-csum", "small", "xattr"),
    ("ext4-default", "keep", "data"), ("ext4-default", "frag", "ETB0"),
    ("ext4-default", "frag", "data"), ("ext4-default", "slow", "data"),
]


@pytest.mark.parametrize(("name", "file", "kind"), FREED)
def test_bitmap_freeing_an_owned_block_is_kept(tmp_path: Path, name: str, file: str,
                                               kind: str) -> None:
    """A bitmap that frees a live file's block, its free count and checksum made to agree
    (so neither catches it): believing it would drop the file's data."""
    image = build(tmp_path, FEATURES[name])
    number, blocks = guests.inode_blocks(image, file)
    block = blocks[kind][-1]
    guests.free_block(image, block)
    with pytest.raises(AssertionError, match="differences"):
        guests.run("e2fsck", "-fn", image)  # e2fsck: block bitmap differences
    reason = _kept(image)
    assert f"inode {number}: block {block} " in reason and "marks it free" in reason


@pytest.mark.parametrize("name", ["ext2", "ext4-default"])
@pytest.mark.parametrize("what", ["Block bitmap", "Inode bitmap", "Inode table"])
def test_bitmap_freeing_metadata_is_kept(tmp_path: Path, name: str, what: str) -> None:
    image = build(tmp_path, FEATURES[name])
    listing = guests.run("dumpe2fs", image).decode()
    block = int(re.search(rf"{what} at (\d+)", listing).group(1))  # type: ignore[union-attr]
    guests.free_block(image, block)
    assert "marks metadata cluster" in _kept(image)


#: (variant, file, debugfs set_inode_field request, what the reason says)
DAMAGED_INODES = [
    ("ext2", "keep", "block[IND] 4000000000", "outside the volume"),
    ("ext2", "keep", "blocks 100", "more blocks than i_blocks"),
    ("ext2", "keep", "mode 0170644", "unknown file type"),
    ("ext4-gdt-csum", "frag", "block[0] 0", "no extent header magic"),
    ("ext4-gdt-csum", "frag", f"block[1] {4 | 6 << 16}", "extent tree depth 6"),
    ("ext4-gdt-csum", "frag", f"block[1] {4 | 2 << 16}", "expected 1"),
    ("ext4-gdt-csum", "keep", "block[5] 4000000000", "outside the volume"),  # ee_start_lo
    ("ext4-gdt-csum", "keep", "block[4] 0", "extent of no blocks"),  # ee_len
    ("ext4-default", "keep", "blocks 8", "more blocks than i_blocks"),
    ("ext4-default", "small", "file_acl 4000000000", "outside the volume"),
    ("ext4-default", "small", "extra_isize 6", "i_extra_isize"),
]


@pytest.mark.parametrize(("name", "file", "request_", "reason"), DAMAGED_INODES)
def test_damaged_inode_is_kept(tmp_path: Path, name: str, file: str, request_: str,
                               reason: str) -> None:
    """An in-use inode whose block map or extent tree cannot be trusted keeps the volume
    (debugfs re-signs the inode with metadata_csum: the structure is what is refused)."""
    image = build(tmp_path, FEATURES[name])
    number, _ = guests.inode_blocks(image, file)
    guests.debugfs_w(image, f"sif {file} {request_}")
    kept = _kept(image)
    assert reason in kept and f"inode {number}" in kept


def _inode_location(image: Path, file: str) -> int:
    """Byte offset of ``file``'s inode (debugfs imap)."""
    out = guests.run("debugfs", "-R", f"imap {file}", image).decode()
    block, offset = re.search(r"block (\d+), offset 0x([0-9a-f]+)", out).groups()  # type: ignore[union-attr]
    bsize, _ = _first_bitmap_block(image)
    return int(block) * bsize + int(offset, 16)


def test_inode_checksum_mismatch_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    number, _ = guests.inode_blocks(image, "keep")
    at = _inode_location(image, "keep") + 0x10  # i_mtime
    guests.patch(image, at, bytes([guests.peek(image, at, 1)[0] ^ 1]))
    assert f"inode {number}: checksum mismatch" in _kept(image)


def test_extent_block_checksum_mismatch_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path, FEATURES["ext4-default"])
    _, blocks = guests.inode_blocks(image, "frag")
    (leaf,) = blocks["ETB0"]
    bsize, _ = _first_bitmap_block(image)
    at = leaf * bsize + 12 + 12 * 60  # an unused entry slot, before the tail
    guests.patch(image, at, b"\x01")
    assert f"extent block {leaf}: checksum mismatch" in _kept(image)


@pytest.mark.parametrize(("name", "reason"), [("ext4-default", "inode bitmap checksum"),
                                              ("ext2", "free inodes")])
def test_inode_bitmap_damage_is_kept(tmp_path: Path, name: str, reason: str) -> None:
    """An inode bitmap that lost or gained inodes: with metadata_csum its checksum tells,
    without it the group's free inode count."""
    image = build(tmp_path, FEATURES[name])
    listing = guests.run("dumpe2fs", image).decode()
    block = int(re.search(r"Inode bitmap at (\d+)", listing).group(1))  # type: ignore[union-attr]
    bsize, _ = _first_bitmap_block(image)
    guests.patch(image, block * bsize + 100, b"\xff")  # inodes 801-808: free
    assert reason in _kept(image)


def _resign_descriptor(image: Path, group: int, offset: int, fmt: str, value: int) -> None:
    """Set a field of a gdt_csum (crc16) descriptor and sign it again."""
    sb = Superblock.parse(guests.peek(image, 1024, 1024))
    assert sb.gdt_csum and not sb.metadata_csum and sb.descriptor_size == 32
    at = (sb.first_data_block + 1) * sb.block_size + group * 32
    raw = bytearray(guests.peek(image, at, 32))
    struct.pack_into(fmt, raw, offset, value)
    crc = crc16(crc16(crc16(0xFFFF, sb.uuid), struct.pack("<I", group)), bytes(raw[:0x1E]))
    struct.pack_into("<H", raw, 0x1E, crc)
    guests.patch(image, at, bytes(raw))


@pytest.mark.parametrize(("offset", "fmt", "value", "reason"), [
    (0x1C, "<H", 2048, "uninitialized part of the inode table"),  # bg_itable_unused
    (0x12, "<H", 0x0001, "INODE_UNINIT"),  # bg_flags
])
def test_inode_table_flags_are_checked(tmp_path: Path, offset: int, fmt: str, value: int,
                                       reason: str) -> None:
    """With group checksums, group 0's inodes in use may not be declared uninitialized."""
    image = build(tmp_path, FEATURES["ext4-32bit"])
    _resign_descriptor(image, 0, offset, fmt, value)
    assert reason in _kept(image)


def _descriptor_free_count_patch(raw: bytes, sb: Superblock, group: int) -> dict[int, int]:
    """Byte patches raising ``group``'s bg_free_blocks_count_lo by one (32-byte descriptors),
    re-signed with gdt_csum's crc16 where the volume has it."""
    at = (sb.first_data_block + 1) * sb.block_size + group * 32
    desc = bytearray(raw[at:at + 32])
    struct.pack_into("<H", desc, 0xC, struct.unpack_from("<H", desc, 0xC)[0] + 1)
    if sb.gdt_csum:
        crc = crc16(crc16(crc16(0xFFFF, sb.uuid), struct.pack("<I", group)), bytes(desc[:0x1E]))
        struct.pack_into("<H", desc, 0x1E, crc)
    return {at + i: desc[i] for i in range(32) if desc[i] != raw[at + i]}


@pytest.mark.parametrize("name", ["ext2", "ext4-32bit"])
def test_no_used_block_can_be_freed(tmp_path: Path, name: str) -> None:
    """Exhaustive over a small volume: every block in use (by dumpe2fs), marked free in
    its bitmap with the group's free count (and gdt_csum) agreeing, keeps the volume whole
    or is not reported free. So every used block is fixed metadata or owned by an inode
    the walk finds: journal, resize inode, directories, files, indirect and extent blocks,
    xattr blocks."""
    image = tmp_path / "ext.img"
    guests.stale(image, 8 * guests.MiB)
    src = guests.files(tmp_path / "src", {"keep": 300_000, "small": 4000, "tiny": 40})
    _sparse(src / "frag")
    (src / "d").mkdir()
    (src / "d" / "slow").symlink_to("y" * 80)
    value = tmp_path / "xattr"
    value.write_bytes(os.urandom(700))
    guests.mke2fs(image, *FEATURES[name], "-b", "1024", "-g", "2048", "-N", "64", src=src)
    guests.debugfs_w(image, f"ea_set -f {value} small user.big")
    guests.run("e2fsck", "-fn", image)
    raw = image.read_bytes()
    sb = Superblock.parse(raw[1024:2048])
    assert sb.descriptor_size == 32 and sb.cluster_ratio == 1
    listing = guests.run("dumpe2fs", image).decode()
    bitmaps = [int(b) for b in re.findall(r"Block bitmap at (\d+)", listing)]
    free = guests.dumpe2fs_free(image)
    used = [b for b in range(sb.first_data_block, sb.blocks_count)
            if not any(s <= b * 1024 < e for s, e in free)]
    kept = 0
    for block in used:
        group, bit = divmod(block - sb.first_data_block, sb.blocks_per_group)
        at = bitmaps[group] * 1024 + bit // 8
        patches = _descriptor_free_count_patch(raw, sb, group)
        patches[at] = raw[at] & ~(1 << bit % 8)
        (part,) = scan(guests.PatchedDisk(raw, patches)).partitions
        kept += part.kept is not None
        assert part.kept is not None or not any(
            s <= block * 1024 < e for s, e in part.free_ranges), f"block {block}"
    # All of them: in a BLOCK_UNINIT group (whose bitmap on disk is not read) the count no
    # longer matches the bitmap the kernel would build.
    assert kept == len(used)
    assert kept > 1500 if sb.feature_compat & 0x4 else kept > 500  # the journal's 1024


@pytest.mark.parametrize(("size", "extra"), [(128, 0), (256, 32), (256, 4), (256, 2),
                                             (512, 0), (1024, 28)])
def test_inode_checksum_without_copy_matches_the_zeroed_copy(size: int, extra: int) -> None:
    """inode._verify folds the zeroed checksum bytes in by CRC linearity; the plain way
    (checksums.rst: zero i_checksum_lo/hi, then crc32c) must agree, stored or damaged."""
    for seed in range(20):
        raw = bytearray(os.urandom(size))
        if size > 128:
            struct.pack_into("<H", raw, 0x80, extra)
        number, generation, fs_seed = 12 + seed, seed * 7919, 0x9E3779B9 ^ seed
        full = size > 128 and 128 + extra >= 0x84
        zeroed = bytearray(raw)
        zeroed[0x7C:0x7E] = b"\0\0"
        if full:
            zeroed[0x82:0x84] = b"\0\0"
        crc = crc32c_raw(fs_seed, struct.pack("<II", number, generation) + bytes(zeroed))
        stored = crc if full else crc & 0xFFFF
        struct.pack_into("<H", raw, 0x7C, stored & 0xFFFF)
        if full:
            struct.pack_into("<H", raw, 0x82, stored >> 16)
        inode._verify(memoryview(bytes(raw)), number, generation, fs_seed, extra, stored)
        with pytest.raises(VolumeChecksumError):
            inode._verify(memoryview(bytes(raw)), number + 1, generation, fs_seed, extra,
                          stored)


def test_volume_bitmap_first_clear_matches_bit_by_bit() -> None:
    """VolumeBitmap (uniform groups shared) and ranges.first_clear against a plain loop over
    the joined bitmap, runs inside one group, across groups and past the last one."""
    rng = random.Random(5)
    for _ in range(300):
        groups = [rng.choice([b"\xff" * 4, bytes(4), bytes(rng.choice([255, 254, 127, 0])
                                                        for _ in range(4))])
                  for _ in range(rng.randint(1, 5))]
        bitmap = VolumeBitmap(32)
        for g in groups:
            bitmap.append(g)
        joined = b"".join(groups)
        first, count = rng.randint(0, len(joined) * 8 + 8), rng.randint(0, 80)
        expected = next((c for c in range(first, first + count)
                         if c >= len(joined) * 8 or not joined[c >> 3] >> (c & 7) & 1), None)
        assert bitmap.first_clear(first, count) == expected
        assert first_clear(joined, first, count) == expected


def test_hurd_volume_is_kept(tmp_path: Path) -> None:
    """Hurd inodes keep fields where Linux keeps the high halves the walk decodes."""
    image = build(tmp_path, ["-t", "ext2", "-o", "hurd"])
    assert "Hurd" in _kept(image)
