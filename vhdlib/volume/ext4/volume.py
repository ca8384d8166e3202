"""The free clusters of an ext2/3/4 volume, read from its block bitmaps.

Safety (issue 13, "when in doubt, keep"): the volume is refused when the journal awaits
recovery, the superblock records errors or orphans, the volume was not cleanly unmounted,
or it uses a feature whose allocation this reader does not know; each group's descriptor
and bitmap checksums are verified where the feature is on (checksums.rst), every piece of
fixed metadata must be marked used, each group's free count must match its bitmap, and
every block an in-use inode owns must be marked used (fileblocks.py).
"""

from __future__ import annotations

from collections import defaultdict

from vhdlib.volume.errors import (
    UnsupportedVolumeError,
    VolumeChecksumError,
    VolumeStateRefusal,
    VolumeStructureError,
)
from vhdlib.volume.ext4 import layout
from vhdlib.volume.ext4 import superblock as s
from vhdlib.volume.ext4.bitmap import VolumeBitmap
from vhdlib.volume.ext4.descriptors import GroupDescriptor
from vhdlib.volume.ext4.fileblocks import require_owned_used
from vhdlib.volume.fsmap import FsMap
from vhdlib.volume.ranges import Range, clear_runs, merge
from vhdlib.volume.source import Window


def probe(win: Window) -> bool:
    """Cheap test: the ext superblock magic at byte 1024 + 0x38."""
    return win.length >= 2048 and win.read(s.OFFSET + 0x38, 2) == b"\x53\xef"


def check_state(sb: s.Superblock) -> None:
    """Refuse a volume not at rest or with features we do not read (super.rst)."""
    if sb.feature_incompat & s.INCOMPAT_RECOVER:
        raise VolumeStateRefusal("ext4 needs_recovery: the journal has not been replayed")
    if sb.state & s.STATE_ERROR:
        raise VolumeStateRefusal("ext4 superblock records errors (s_state ERROR_FS)")
    if sb.state & s.STATE_ORPHAN or sb.last_orphan or (
            sb.feature_ro_compat & s.RO_COMPAT_ORPHAN_PRESENT):
        raise VolumeStateRefusal("ext4 orphan list is being processed")
    if not sb.state & s.STATE_VALID:
        raise VolumeStateRefusal("ext4 not cleanly unmounted (s_state VALID_FS clear)")
    if sb.feature_incompat & s.INCOMPAT_JOURNAL_DEV:
        raise UnsupportedVolumeError("ext4 external journal device")
    if sb.creator_os == s.OS_HURD:
        # inodes.rst "osd1"/"osd2": Hurd inodes keep a translator block and other fields
        # where Linux keeps the high halves this reader decodes.
        raise UnsupportedVolumeError("ext2 created by the Hurd")
    if sb.feature_incompat & s.INCOMPAT_MMP:
        raise VolumeStateRefusal("ext4 multi-mount protection: may be in use elsewhere")
    unknown = sb.feature_incompat & ~s.INCOMPAT_KNOWN
    if unknown:
        raise UnsupportedVolumeError(f"ext4 incompatible features 0x{unknown:x}")
    unknown = sb.feature_ro_compat & ~s.RO_COMPAT_KNOWN
    if unknown or sb.feature_ro_compat & s.RO_COMPAT_HAS_SNAPSHOT:
        raise UnsupportedVolumeError(
            f"ext4 read-only-compatible features 0x{sb.feature_ro_compat:x}")


def read_descriptors(win: Window, sb: s.Superblock) -> list[GroupDescriptor]:
    blocks: dict[int, bytes] = {}
    out = []
    ds, dpb = sb.descriptor_size, sb.descriptors_per_block
    for g in range(sb.groups):
        block = layout.descriptor_block(sb, g)
        if block >= sb.blocks_count:
            raise VolumeStructureError(f"group {g}: descriptor block {block} beyond the end")
        if block not in blocks:
            blocks[block] = win.read(block * sb.block_size, sb.block_size)
        i = g % dpb
        out.append(GroupDescriptor.parse(blocks[block][i * ds:(i + 1) * ds], g, sb))
    return out


def _metadata(sb: s.Superblock, descs: list[GroupDescriptor]) -> dict[int, list[Range]]:
    """Per group, the cluster ranges (relative to the group) of fixed metadata: the base
    blocks and every group's bitmaps and inode table that fall in it."""
    ratio = sb.cluster_ratio
    spans: list[Range] = []
    for d in descs:
        first = layout.group_first_block(sb, d.group)
        spans.append((first, first + layout.base_meta_blocks(sb, d.group)))
        for start, count in ((d.block_bitmap, 1), (d.inode_bitmap, 1),
                             (d.inode_table, sb.inode_table_blocks)):
            if start < sb.first_data_block or start + count > sb.blocks_count:
                raise VolumeStructureError(
                    f"group {d.group}: metadata at block {start}+{count} outside the volume")
            spans.append((start, start + count))
    per_group: dict[int, list[Range]] = defaultdict(list)
    for start, end in spans:
        block = start
        while block < end:
            g = (block - sb.first_data_block) // sb.blocks_per_group
            g_first = layout.group_first_block(sb, g)
            stop = min(end, g_first + sb.blocks_per_group)
            per_group[g].append(((block - g_first) // ratio, -(-(stop - g_first) // ratio)))
            block = stop
    return per_group


def _uninit_bitmap(sb: s.Superblock, meta: list[Range]) -> bytearray:
    """The bitmap the kernel builds for a BLOCK_UNINIT group (``ext4_init_block_bitmap``):
    metadata set, every other cluster free."""
    bitmap = bytearray(sb.clusters_per_group // 8)
    for start, end in meta:
        for c in range(start, end):
            bitmap[c >> 3] |= 1 << (c & 7)
    return bitmap


def _group_bitmap(win: Window, sb: s.Superblock, d: GroupDescriptor,
                  meta: list[Range]) -> bytes:
    """The group's block bitmap (clusters_per_group bits): read and checked, or built as
    the kernel builds a BLOCK_UNINIT one."""
    nclusters = layout.group_clusters(sb, d.group)
    if sb.has_group_csum and d.block_uninit:
        if d.group == 0:  # the kernel refuses this too (ext4_read_block_bitmap_nowait)
            raise VolumeStructureError("group 0 block bitmap marked uninitialized")
        return bytes(_uninit_bitmap(sb, meta))
    bitmap = win.read(d.block_bitmap * sb.block_size, sb.block_size)
    if sb.metadata_csum and not d.bitmap_checksum_ok(bitmap, sb):
        raise VolumeChecksumError(f"group {d.group}: block bitmap checksum mismatch")
    for start, end in meta:
        for c in range(start, min(end, nclusters)):
            if not bitmap[c >> 3] >> (c & 7) & 1:
                raise VolumeStructureError(
                    f"group {d.group}: bitmap marks metadata cluster {c} free")
    return bitmap[:sb.clusters_per_group // 8]


def _group_free(sb: s.Superblock, d: GroupDescriptor, bitmap: bytes) -> list[tuple[int, int]]:
    runs = list(clear_runs(bitmap, layout.group_clusters(sb, d.group)))
    free = sum(n for _, n in runs)
    if free != d.free_blocks_count:
        raise VolumeStructureError(
            f"group {d.group}: bitmap has {free} free clusters, descriptor says "
            f"{d.free_blocks_count}")
    return runs


def read(win: Window) -> FsMap:
    """The allocation map of the ext2/3/4 volume in ``win``; raises one of
    :data:`vhdlib.volume.errors.KEEP_ERRORS` when it must be kept whole."""
    sb = s.Superblock.parse(win.read(s.OFFSET, s.SIZE))
    check_state(sb)
    fs_bytes = sb.blocks_count * sb.block_size
    if fs_bytes > win.length:
        raise VolumeStructureError(
            f"ext4 volume of {fs_bytes} bytes exceeds its partition ({win.length} bytes)")
    descs = read_descriptors(win, sb)
    meta = _metadata(sb, descs)
    bitmap = VolumeBitmap(sb.clusters_per_group)
    group_free = []
    for d in descs:
        group_bitmap = _group_bitmap(win, sb, d, meta.get(d.group, []))
        group_free.append(_group_free(sb, d, group_bitmap))
        bitmap.append(group_bitmap)
    require_owned_used(win, sb, descs, bitmap)
    free: list[Range] = []
    for d, runs in zip(descs, group_free, strict=True):
        g_first = layout.group_first_block(sb, d.group)
        for first, count in runs:
            start = (g_first + first * sb.cluster_ratio) * sb.block_size
            free.append((start, min(start + count * sb.cluster_size, fs_bytes)))
    return FsMap(sb.name, sb.cluster_size, tuple(merge(free)))
