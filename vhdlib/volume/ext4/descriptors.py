"""Block group descriptors (kernel Documentation/filesystems/ext4/group_descr.rst).

32 bytes without ``64bit``, ``s_desc_size`` bytes with it. The descriptor checksum
(``bg_checksum``) is crc16 over uuid + group + descriptor with ``gdt_csum`` (uninit_bg), or
the low 16 bits of crc32c(seed, group + descriptor) with ``metadata_csum``
(group_descr.rst "bg_checksum"; the kernel's ``ext4_group_desc_csum``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vhdlib.volume.errors import VolumeChecksumError
from vhdlib.volume.ext4.checksums import crc16, crc32c_raw
from vhdlib.volume.ext4.superblock import Superblock

# group_descr.rst "bg_flags"
BG_INODE_UNINIT = 0x0001
BG_BLOCK_UNINIT = 0x0002
BG_INODE_ZEROED = 0x0004

CHECKSUM_OFFSET = 0x1E
_LO = struct.Struct("<IIIHHHHIHHHH")
_HI = struct.Struct("<IIIHHHHIHH")
#: The kernel checks bg_block_bitmap_csum_hi only when the descriptor reaches past it
#: (EXT4_BG_BLOCK_BITMAP_CSUM_HI_END); bg_inode_bitmap_csum_hi likewise
#: (EXT4_BG_INODE_BITMAP_CSUM_HI_END).
BITMAP_CSUM_HI_END = 0x3A
INODE_BITMAP_CSUM_HI_END = 0x3C


@dataclass(frozen=True)
class GroupDescriptor:
    """One decoded descriptor (offsets from group_descr.rst)."""

    group: int
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free_blocks_count: int
    flags: int
    block_bitmap_csum: int
    checksum: int
    size: int
    free_inodes_count: int
    inode_bitmap_csum: int
    itable_unused: int

    @classmethod
    def parse(cls, raw: bytes, group: int, sb: Superblock) -> GroupDescriptor:
        """Decode ``raw`` (one descriptor) and check its checksum where the feature is on."""
        (bb, ib, it, free, free_ino, _dirs, flags, _exb, bbcsum, ibcsum, unused,
         csum) = _LO.unpack_from(raw)
        size = sb.descriptor_size
        if size >= 64:
            bb_hi, ib_hi, it_hi, free_hi, fi_hi, _d_hi, u_hi, _ex_hi, bbc_hi, ibc_hi = (
                _HI.unpack_from(raw, 0x20))
            bb |= bb_hi << 32
            ib |= ib_hi << 32
            it |= it_hi << 32
            free |= free_hi << 16
            free_ino |= fi_hi << 16
            unused |= u_hi << 16
            if size >= BITMAP_CSUM_HI_END:
                bbcsum |= bbc_hi << 16
            if size >= INODE_BITMAP_CSUM_HI_END:
                ibcsum |= ibc_hi << 16
        desc = cls(group, bb, ib, it, free, flags, bbcsum, csum, size, free_ino, ibcsum,
                   unused)
        desc._check(bytes(raw[:size]), sb)
        return desc

    def _check(self, raw: bytes, sb: Superblock) -> None:
        group_le = struct.pack("<I", self.group)
        if sb.metadata_csum:
            crc = crc32c_raw(sb.csum_seed, group_le)
            crc = crc32c_raw(crc, raw[:CHECKSUM_OFFSET] + b"\0\0" + raw[CHECKSUM_OFFSET + 2:])
            expected = crc & 0xFFFF
        elif sb.gdt_csum:
            crc = crc16(0xFFFF, sb.uuid)
            crc = crc16(crc, group_le)
            crc = crc16(crc, raw[:CHECKSUM_OFFSET])
            if sb.is_64bit and len(raw) > CHECKSUM_OFFSET + 2:
                crc = crc16(crc, raw[CHECKSUM_OFFSET + 2:])
            expected = crc
        else:
            return
        if expected != self.checksum:
            raise VolumeChecksumError(f"group {self.group}: descriptor checksum mismatch")

    @property
    def block_uninit(self) -> bool:
        return bool(self.flags & BG_BLOCK_UNINIT)

    @property
    def inode_uninit(self) -> bool:
        return bool(self.flags & BG_INODE_UNINIT)

    def bitmap_checksum_ok(self, bitmap: bytes, sb: Superblock) -> bool:
        """bitmaps.rst / checksums.rst: crc32c(seed, bitmap of clusters_per_group / 8
        bytes); 16 or 32 bits stored depending on the descriptor size."""
        crc = crc32c_raw(sb.csum_seed, bitmap[:sb.clusters_per_group // 8])
        if self.size >= BITMAP_CSUM_HI_END:
            return crc == self.block_bitmap_csum
        return crc & 0xFFFF == self.block_bitmap_csum & 0xFFFF

    def inode_bitmap_checksum_ok(self, bitmap: bytes, sb: Superblock) -> bool:
        """bitmaps.rst / checksums.rst: crc32c(seed, bitmap of inodes_per_group / 8 bytes)
        (the kernel's ``ext4_inode_bitmap_csum_verify``)."""
        crc = crc32c_raw(sb.csum_seed, bitmap[:sb.inodes_per_group // 8])
        if self.size >= INODE_BITMAP_CSUM_HI_END:
            return crc == self.inode_bitmap_csum
        return crc & 0xFFFF == self.inode_bitmap_csum & 0xFFFF
