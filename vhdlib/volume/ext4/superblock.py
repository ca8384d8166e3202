"""The ext2/3/4 superblock (kernel Documentation/filesystems/ext4/super.rst).

It sits at byte 1024 of the volume and is 1024 bytes long; only the fields the allocation
map needs are decoded. Feature-bit names are the kernel's (``EXT4_FEATURE_*``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError
from vhdlib.volume.ext4.checksums import crc32c_raw

OFFSET = 1024
SIZE = 1024
MAGIC = 0xEF53  # super.rst: s_magic

# super.rst "s_state"
STATE_VALID = 0x0001
STATE_ERROR = 0x0002
STATE_ORPHAN = 0x0004

# super.rst "s_feature_compat"
COMPAT_HAS_JOURNAL = 0x0004
COMPAT_SPARSE_SUPER2 = 0x0200
# super.rst "s_feature_incompat"
INCOMPAT_COMPRESSION = 0x0001
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_RECOVER = 0x0004
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_EXTENTS = 0x0040
INCOMPAT_64BIT = 0x0080
INCOMPAT_MMP = 0x0100
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_EA_INODE = 0x0400
INCOMPAT_DIRDATA = 0x1000
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000
#: Incompatible features whose block allocation this reader understands.
INCOMPAT_KNOWN = (INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS
                  | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE | INCOMPAT_CSUM_SEED
                  | INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA | INCOMPAT_ENCRYPT
                  | INCOMPAT_CASEFOLD)
# super.rst "s_feature_ro_compat"
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_HUGE_FILE = 0x0008
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_HAS_SNAPSHOT = 0x0080
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400
RO_COMPAT_ORPHAN_PRESENT = 0x10000
RO_COMPAT_KNOWN = (0x0001 | 0x0002 | 0x0004 | 0x0008 | 0x0010 | 0x0020 | 0x0040 | 0x0100
                   | 0x0200 | 0x0400 | 0x1000 | 0x2000 | 0x8000 | 0x10000)

CHECKSUM_OFFSET = 0x3FC
CSUM_TYPE_CRC32C = 1  # super.rst "s_checksum_type"
# super.rst "s_creator_os"
OS_LINUX = 0
OS_HURD = 1
#: super.rst s_first_ino: the first non-reserved inode of a revision-0 volume.
GOOD_OLD_FIRST_INO = 11


def _u32(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", b, off)[0])


def _u16(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", b, off)[0])


@dataclass(frozen=True)
class Superblock:
    """Decoded superblock fields (offsets from super.rst)."""

    inodes_count: int
    blocks_count: int
    first_data_block: int
    log_block_size: int
    log_cluster_size: int
    blocks_per_group: int
    clusters_per_group: int
    inodes_per_group: int
    inode_size: int
    first_ino: int
    state: int
    rev_level: int
    feature_compat: int
    feature_incompat: int
    feature_ro_compat: int
    uuid: bytes
    reserved_gdt_blocks: int
    last_orphan: int
    desc_size: int
    first_meta_bg: int
    creator_os: int
    log_groups_per_flex: int
    checksum_type: int
    backup_bgs: tuple[int, int]
    checksum_seed: int
    checksum: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Superblock:
        """Decode and bound-check 1024 bytes; checks the checksum when metadata_csum is on."""
        if len(raw) < SIZE or _u16(raw, 0x38) != MAGIC:
            raise VolumeStructureError("no ext2/3/4 superblock magic")
        sb = cls(
            inodes_count=_u32(raw, 0x0),
            blocks_count=_u32(raw, 0x4) | (_u32(raw, 0x150) << 32),
            first_data_block=_u32(raw, 0x14),
            log_block_size=_u32(raw, 0x18),
            log_cluster_size=_u32(raw, 0x1C),
            blocks_per_group=_u32(raw, 0x20),
            clusters_per_group=_u32(raw, 0x24),
            inodes_per_group=_u32(raw, 0x28),
            # super.rst s_inode_size: revision 0 has 128-byte inodes.
            inode_size=_u16(raw, 0x58) if _u32(raw, 0x4C) else 128,
            first_ino=_u32(raw, 0x54) if _u32(raw, 0x4C) else GOOD_OLD_FIRST_INO,
            state=_u16(raw, 0x3A),
            rev_level=_u32(raw, 0x4C),
            feature_compat=_u32(raw, 0x5C),
            feature_incompat=_u32(raw, 0x60),
            feature_ro_compat=_u32(raw, 0x64),
            uuid=bytes(raw[0x68:0x78]),
            reserved_gdt_blocks=_u16(raw, 0xCE),
            last_orphan=_u32(raw, 0xE8),
            desc_size=_u16(raw, 0xFE),
            first_meta_bg=_u32(raw, 0x104),
            creator_os=_u32(raw, 0x48),
            log_groups_per_flex=raw[0x174],
            checksum_type=raw[0x175],
            backup_bgs=(_u32(raw, 0x24C), _u32(raw, 0x250)),
            checksum_seed=_u32(raw, 0x270),
            checksum=_u32(raw, CHECKSUM_OFFSET),
            raw=bytes(raw[:SIZE]),
        )
        # super.rst: revision 0 has no feature fields; they read zero on such volumes.
        if sb.rev_level == 0 and (sb.feature_compat or sb.feature_incompat
                                  or sb.feature_ro_compat):
            raise VolumeStructureError("revision-0 superblock with feature flags")
        sb._check_bounds()
        sb._check_checksum()
        return sb

    def _check_bounds(self) -> None:
        if self.log_block_size > 6:  # 1 KiB .. 64 KiB (super.rst: 2 ^ (10 + s_log_block_size))
            raise VolumeStructureError(f"block size 2^(10+{self.log_block_size})")
        if self.first_data_block != (1 if self.block_size == 1024 and not self.bigalloc else 0):
            raise VolumeStructureError(
                f"s_first_data_block {self.first_data_block} for {self.block_size}-byte blocks")
        if self.bigalloc:
            if not self.log_block_size <= self.log_cluster_size <= self.log_block_size + 16:
                raise VolumeStructureError("bigalloc cluster size out of range")
        elif self.log_cluster_size != self.log_block_size and self.log_cluster_size != 0:
            raise VolumeStructureError("cluster size differs from block size without bigalloc")
        bits = self.block_size * 8  # a group's bitmap is one block
        if not 0 < self.clusters_per_group <= bits or self.clusters_per_group % 8:
            raise VolumeStructureError(f"{self.clusters_per_group} clusters per group")
        if self.blocks_per_group != self.clusters_per_group * self.cluster_ratio:
            raise VolumeStructureError("blocks per group disagrees with clusters per group")
        if self.blocks_count <= self.first_data_block:
            raise VolumeStructureError(f"{self.blocks_count} blocks")
        if self.is_64bit and not (32 <= self.desc_size <= 1024
                                  and self.desc_size & (self.desc_size - 1) == 0):
            raise VolumeStructureError(f"descriptor size {self.desc_size}")
        if self.inode_size < 128 or self.inode_size > self.block_size or (
                self.inode_size & (self.inode_size - 1)):
            raise VolumeStructureError(f"inode size {self.inode_size}")
        if self.inodes_per_group == 0 or self.inodes_count != self.inodes_per_group * self.groups:
            raise VolumeStructureError("inode count disagrees with the group count")
        # The kernel refuses s_first_ino below 11 (ext4_fill_super, "invalid first ino").
        if not GOOD_OLD_FIRST_INO <= self.first_ino <= self.inodes_count:
            raise VolumeStructureError(f"first non-reserved inode {self.first_ino}")

    def _check_checksum(self) -> None:
        # checksums.rst / super.rst s_checksum: crc32c over the superblock up to the field.
        if not self.metadata_csum:
            return
        if self.checksum_type != CSUM_TYPE_CRC32C:
            raise VolumeStructureError(f"unknown checksum type {self.checksum_type}")
        if crc32c_raw(0xFFFFFFFF, self.raw[:CHECKSUM_OFFSET]) != self.checksum:
            raise VolumeChecksumError("superblock checksum mismatch")

    # --- derived values (cached: the inode walk asks for them per inode) --------------

    @cached_property
    def block_size(self) -> int:
        return 1024 << self.log_block_size

    @cached_property
    def bigalloc(self) -> bool:
        return bool(self.feature_ro_compat & RO_COMPAT_BIGALLOC)

    @cached_property
    def cluster_ratio(self) -> int:
        """Blocks per allocation cluster (1 without bigalloc)."""
        return 1 << (self.log_cluster_size - self.log_block_size) if self.bigalloc else 1

    @cached_property
    def cluster_size(self) -> int:
        return self.block_size * self.cluster_ratio

    @cached_property
    def is_64bit(self) -> bool:
        return bool(self.feature_incompat & INCOMPAT_64BIT)

    @cached_property
    def descriptor_size(self) -> int:
        """Bytes per group descriptor: s_desc_size with 64bit, else 32 (group_descr.rst)."""
        return self.desc_size if self.is_64bit else 32

    @cached_property
    def groups(self) -> int:
        return -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)

    @cached_property
    def extents(self) -> bool:
        return bool(self.feature_incompat & INCOMPAT_EXTENTS)

    @cached_property
    def huge_file(self) -> bool:
        return bool(self.feature_ro_compat & RO_COMPAT_HUGE_FILE)

    @cached_property
    def metadata_csum(self) -> bool:
        return bool(self.feature_ro_compat & RO_COMPAT_METADATA_CSUM)

    @cached_property
    def gdt_csum(self) -> bool:
        return bool(self.feature_ro_compat & RO_COMPAT_GDT_CSUM)

    @cached_property
    def has_group_csum(self) -> bool:
        """``ext4_has_group_desc_csum``: uninit flags are honoured only then."""
        return self.metadata_csum or self.gdt_csum

    @cached_property
    def csum_seed(self) -> int:
        """checksums.rst: crc32c(~0, uuid), or s_checksum_seed with csum_seed (cached: every
        inode's checksum starts from it)."""
        if self.feature_incompat & INCOMPAT_CSUM_SEED:
            return self.checksum_seed
        return crc32c_raw(0xFFFFFFFF, self.uuid)

    @cached_property
    def meta_bg(self) -> bool:
        return bool(self.feature_incompat & INCOMPAT_META_BG)

    @cached_property
    def inode_table_blocks(self) -> int:
        """Blocks of one group's inode table (the kernel's s_itb_per_group)."""
        return -(-self.inodes_per_group * self.inode_size // self.block_size)

    @cached_property
    def descriptors_per_block(self) -> int:
        return self.block_size // self.descriptor_size

    @cached_property
    def gdt_blocks(self) -> int:
        """Blocks of the whole descriptor table (the kernel's s_gdb_count)."""
        return -(-self.groups // self.descriptors_per_block)

    @cached_property
    def name(self) -> str:
        """"ext4", "ext3" or "ext2" by the features mkfs sets for each."""
        if self.feature_incompat & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG) or (
                self.feature_ro_compat & (RO_COMPAT_METADATA_CSUM | RO_COMPAT_BIGALLOC
                                          | RO_COMPAT_GDT_CSUM)):
            return "ext4"
        return "ext3" if self.feature_compat & COMPAT_HAS_JOURNAL else "ext2"
