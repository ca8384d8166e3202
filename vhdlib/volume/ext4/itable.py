"""The in-use inodes of an ext2/3/4 volume: each group's inode bitmap, then the inode table
blocks holding in-use inodes (kernel Documentation/filesystems/ext4/bitmaps.rst,
inode_table.rst, group_descr.rst "bg_flags" and "bg_itable_unused").

With group checksums (uninit_bg / metadata_csum) an INODE_UNINIT group has no bitmap on
disk and no inode in use, and the last bg_itable_unused entries of a table were never
initialized (they may hold stale bytes): an in-use inode there is damage. The reserved
inodes below s_first_ino (special_inodes.rst: bad blocks, root, resize, journal, ...) are
read whatever the bitmap says, as e2fsck reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError
from vhdlib.volume.ext4.descriptors import GroupDescriptor
from vhdlib.volume.ext4.inode import Inode
from vhdlib.volume.ext4.superblock import Superblock
from vhdlib.volume.source import Window

#: The largest single read of an inode table (a group's table is a few MiB at most on
#: common layouts; 64 KiB blocks allow 128 MiB).
MAX_READ = 8 << 20
_NOT_EMPTY = re.compile(rb"[^\x00]+")


def set_bits(bitmap: bytes, nbits: int) -> list[int]:
    """Indexes of the set bits among the first ``nbits`` (a multiple of 8) of ``bitmap``."""
    out: list[int] = []
    for match in _NOT_EMPTY.finditer(bitmap, 0, nbits // 8):
        for i in range(*match.span()):
            byte = bitmap[i]
            if byte == 0xFF:
                out.extend(range(i * 8, i * 8 + 8))
            else:
                out.extend(i * 8 + b for b in range(8) if byte >> b & 1)
    return out


def _in_use(win: Window, sb: Superblock, d: GroupDescriptor) -> list[int]:
    """Indexes (within the group) of the inodes the group's bitmap marks in use, checked
    against the descriptor's free count and bg_itable_unused."""
    ipg = sb.inodes_per_group
    if sb.has_group_csum and d.inode_uninit:
        return []
    bitmap = win.read(d.inode_bitmap * sb.block_size, sb.block_size)
    if sb.metadata_csum and not d.inode_bitmap_checksum_ok(bitmap, sb):
        raise VolumeChecksumError(f"group {d.group}: inode bitmap checksum mismatch")
    used = set_bits(bitmap, ipg)
    # e2fsck pass 5 holds the count to the bitmap: a bitmap that lost an in-use inode
    # would hide that inode's blocks.
    if ipg - len(used) != d.free_inodes_count:
        raise VolumeStructureError(
            f"group {d.group}: inode bitmap has {ipg - len(used)} free inodes, descriptor "
            f"says {d.free_inodes_count}")
    if sb.has_group_csum:
        if d.itable_unused > ipg:
            raise VolumeStructureError(f"group {d.group}: {d.itable_unused} unused inodes")
        if used and used[-1] >= ipg - d.itable_unused:
            raise VolumeStructureError(
                f"group {d.group}: inode {d.group * ipg + used[-1] + 1} in use in the "
                f"uninitialized part of the inode table (bg_itable_unused)")
    return used


def _runs(blocks: list[int], limit: int) -> Iterator[tuple[int, int]]:
    """Sorted distinct block indexes as ``(first, count)`` runs of at most ``limit``."""
    start = prev = blocks[0]
    for b in blocks[1:]:
        if b != prev + 1 or b - start >= limit:
            yield start, prev - start + 1
            start = b
        prev = b
    yield start, prev - start + 1


def in_use_inodes(win: Window, sb: Superblock,
                  descs: list[GroupDescriptor]) -> Iterator[Inode]:
    """Every in-use inode, group by group. Only inode table blocks holding one are read,
    each contiguous run of them at once."""
    ipg, isz, bs = sb.inodes_per_group, sb.inode_size, sb.block_size
    if ipg % 8 or ipg > bs * 8:  # the bitmap is one block (bitmaps.rst)
        raise VolumeStructureError(f"{ipg} inodes per group")
    reserved = sb.first_ino - 1  # inodes 1 .. s_first_ino - 1
    per_block = bs // isz
    for d in descs:
        used = _in_use(win, sb, d)
        first_no = d.group * ipg + 1
        if first_no <= reserved:
            if sb.has_group_csum and d.inode_uninit:
                raise VolumeStructureError(
                    f"group {d.group}: holds reserved inodes but is marked INODE_UNINIT")
            used = sorted(set(used) | set(range(min(ipg, reserved - first_no + 1))))
        if not used:
            continue
        blocks = sorted({i // per_block for i in used})
        pos = 0  # the next of ``used`` to parse: runs and inodes ascend together
        for first, count in _runs(blocks, MAX_READ // bs):
            data = memoryview(win.read((d.inode_table + first) * bs, count * bs))
            base, end = first * per_block, (first + count) * per_block
            while pos < len(used) and used[pos] < end:
                off = (used[pos] - base) * isz
                yield Inode.parse(data[off:off + isz], first_no + used[pos], sb)
                pos += 1
