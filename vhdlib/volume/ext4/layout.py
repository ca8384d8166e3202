"""Where ext2/3/4 keeps its fixed metadata: superblock backups, descriptor tables, reserved
descriptor blocks (kernel Documentation/filesystems/ext4/blockgroup.rst "Layout",
"Flexible Block Groups", "Meta Block Groups"; the kernel's ``ext4_bg_has_super``,
``descriptor_loc`` and ``ext4_num_base_meta_clusters``).
"""

from __future__ import annotations

from vhdlib.volume.ext4.superblock import (
    COMPAT_SPARSE_SUPER2,
    RO_COMPAT_SPARSE_SUPER,
    Superblock,
)


def _is_power_of(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


def has_super(sb: Superblock, group: int) -> bool:
    """blockgroup.rst: a backup superblock in group 0, 1 and powers of 3, 5, 7 with
    sparse_super; only in s_backup_bgs with sparse_super2; in every group otherwise."""
    if group == 0:
        return True
    if sb.feature_compat & COMPAT_SPARSE_SUPER2:
        return group in sb.backup_bgs
    if group <= 1 or not sb.feature_ro_compat & RO_COMPAT_SPARSE_SUPER:
        return True
    if not group & 1:
        return False
    return _is_power_of(group, 3) or _is_power_of(group, 5) or _is_power_of(group, 7)


def group_first_block(sb: Superblock, group: int) -> int:
    return sb.first_data_block + group * sb.blocks_per_group


def group_blocks(sb: Superblock, group: int) -> int:
    """Blocks in ``group`` (the last group may be short)."""
    return min(sb.blocks_per_group, sb.blocks_count - group_first_block(sb, group))


def group_clusters(sb: Superblock, group: int) -> int:
    return -(-group_blocks(sb, group) // sb.cluster_ratio)


def _meta_bg_start(sb: Superblock) -> int:
    """First group described by a meta_bg descriptor block (groups before it use the
    classic table)."""
    if not sb.meta_bg:
        return sb.groups
    return sb.first_meta_bg * sb.descriptors_per_block


def descriptor_block(sb: Superblock, group: int) -> int:
    """Block holding the descriptor of ``group`` (the kernel's ``descriptor_loc``)."""
    nr = group // sb.descriptors_per_block
    # The block holding the primary superblock (byte 1024): block 1 with 1 KiB blocks even
    # when bigalloc makes s_first_data_block 0 (the kernel's logical_sb_block).
    sb_block = 1 if sb.block_size == 1024 else 0
    if group < _meta_bg_start(sb):
        return sb_block + nr + 1
    first = nr * sb.descriptors_per_block
    extra = 1 if has_super(sb, first) else 0
    if sb.block_size == 1024 and nr == 0 and sb.first_data_block == 0:
        extra += 1
    return group_first_block(sb, first) + extra


def base_meta_blocks(sb: Superblock, group: int) -> int:
    """Blocks at the start of ``group`` holding the superblock copy, the descriptor table
    and its reserved blocks (``ext4_num_base_meta_clusters``, in blocks)."""
    num = 1 if has_super(sb, group) else 0
    if group < _meta_bg_start(sb):
        if num:
            num += sb.first_meta_bg if sb.meta_bg else sb.gdt_blocks
            num += sb.reserved_gdt_blocks
    else:
        dpb = sb.descriptors_per_block
        first = group // dpb * dpb
        if group in (first, first + 1, first + dpb - 1):
            num += 1
    return num
