"""One ext2/3/4 inode (kernel Documentation/filesystems/ext4/inodes.rst).

Only the fields that say which blocks the inode owns are decoded: the file type, the
flags, ``i_blocks``, ``i_block`` (the block map or extent tree root, ifork.rst) and
``i_file_acl`` (the extended attribute block, attributes.rst). The checksum is verified
with ``metadata_csum`` (checksums.rst "Inodes"; the kernel's ``ext4_inode_csum``).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import NamedTuple

from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError
from vhdlib.volume.ext4.checksums import crc32c_raw
from vhdlib.volume.ext4.superblock import Superblock

#: special_inodes.rst: the bad blocks inode.
BAD_INO = 1
#: inodes.rst: the size of a revision-0 inode; larger ones add ``i_extra_isize`` bytes.
GOOD_OLD_INODE_SIZE = 128

# inodes.rst "i_mode": the file type (the top four bits)
S_IFMT = 0xF000
S_IFIFO = 0x1000
S_IFCHR = 0x2000
S_IFDIR = 0x4000
S_IFBLK = 0x6000
S_IFREG = 0x8000
S_IFLNK = 0xA000
S_IFSOCK = 0xC000
#: Types whose i_block holds a device number or nothing (ifork.rst): no block map.
NO_BLOCK_TYPES = frozenset({S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK})

# inodes.rst "i_flags"
EXT4_HUGE_FILE_FL = 0x40000
EXT4_EXTENTS_FL = 0x80000
EXT4_INLINE_DATA_FL = 0x10000000

# inodes.rst: the first 128 bytes (Linux osd2), from i_mode to l_i_reserved, then
# i_extra_isize and i_checksum_hi of a larger inode.
_BASE = struct.Struct("<H2xI18xHII4x60sIII4xHH4xH2x")
_LARGE = struct.Struct(_BASE.format + "HH")
CHECKSUM_LO = 0x7C
CHECKSUM_HI = 0x82
_LE32X2 = struct.Struct("<II")


class Inode(NamedTuple):
    """The block-owning fields of one inode (offsets from inodes.rst). A tuple: a walk
    builds one per in-use inode."""

    number: int
    mode: int
    flags: int
    #: ``i_blocks`` in 512-byte units (converted when EXT4_HUGE_FILE_FL counts blocks).
    sectors: int
    i_block: bytes
    file_acl: int
    generation: int

    @classmethod
    def parse(cls, raw: bytes | memoryview, number: int, sb: Superblock) -> Inode:
        """Decode one ``s_inode_size`` record; verifies its checksum with metadata_csum."""
        if sb.inode_size > GOOD_OLD_INODE_SIZE:
            (mode, _size_lo, _links, blocks, flags, i_block, generation, acl, _size_hi,
             blocks_hi, acl_hi, csum_lo, extra, csum_hi) = _LARGE.unpack_from(raw)
            # The kernel's ext4_iget refuses a bad i_extra_isize before anything else.
            if GOOD_OLD_INODE_SIZE + extra > sb.inode_size or extra & 3:
                raise VolumeStructureError(f"inode {number}: i_extra_isize {extra}")
        else:
            (mode, _size_lo, _links, blocks, flags, i_block, generation, acl, _size_hi,
             blocks_hi, acl_hi, csum_lo) = _BASE.unpack_from(raw)
            extra = csum_hi = 0
        # inodes.rst "i_blocks_lo" and the kernel's ext4_inode_blocks: the high 16 bits,
        # and blocks as the unit, only with huge_file.
        if sb.huge_file:
            blocks |= blocks_hi << 32
            if flags & EXT4_HUGE_FILE_FL:
                blocks <<= sb.log_block_size + 1
        # inodes.rst "l_i_file_acl_high": the high bits count only on 64bit volumes.
        if sb.is_64bit:
            acl |= acl_hi << 32
        if sb.metadata_csum:
            _verify(raw[:sb.inode_size], number, generation, sb.csum_seed, extra,
                    csum_lo | csum_hi << 16)
        return cls(number, mode, flags, blocks, i_block, acl, generation)

    def csum_seed(self, sb: Superblock) -> int:
        """checksums.rst: crc32c(fs seed, inode number, generation), the seed of the
        inode's own checksum and of its extent blocks' (the kernel's i_csum_seed)."""
        return crc32c_raw(sb.csum_seed, _LE32X2.pack(self.number, self.generation))

    @property
    def file_type(self) -> int:
        return self.mode & S_IFMT

    def has_block_map(self, sb: Superblock) -> bool:
        """Whether ``i_block`` maps blocks (an extent tree or an ext2/3 block map).

        ifork.rst: not for inline data, fast symlinks (the target in i_block: the kernel's
        ``ext4_inode_is_fast_symlink``, no blocks but the xattr block's), devices, fifos
        and sockets. Reserved inodes below s_first_ino with no file type (boot loader,
        undelete directory, ...) map nothing, as e2fsck reads them, except the bad
        blocks inode (1), whose block map lists the bad blocks (special_inodes.rst). Any
        other inode with an unknown type is damage: it may be a file's.
        """
        if self.number == BAD_INO:
            return True
        kind = self.mode & S_IFMT
        if kind in (S_IFREG, S_IFDIR):
            return not self.flags & EXT4_INLINE_DATA_FL
        if kind == S_IFLNK:
            if self.flags & EXT4_INLINE_DATA_FL:
                return False
            ea_sectors = sb.cluster_size >> 9 if self.file_acl else 0
            return self.sectors - ea_sectors != 0
        if kind in NO_BLOCK_TYPES or (kind == 0 and self.number < sb.first_ino):
            return False
        raise VolumeStructureError(
            f"inode {self.number} in use with an unknown file type (mode {self.mode:#o})")

    @property
    def uses_extents(self) -> bool:
        return bool(self.flags & EXT4_EXTENTS_FL)


@lru_cache(maxsize=8)
def _zeroing(size: int) -> tuple[list[int], ...]:
    """Per byte of i_checksum_lo and i_checksum_hi in an inode of ``size`` bytes, per byte
    value: how that byte changes the CRC register at the end of the inode. The register
    update is linear over GF(2), so the CRC with those bytes zeroed is the CRC of the
    inode as stored XOR their changes: no copy of each inode to zero them."""
    return tuple([crc32c_raw(0, bytes([v]) + bytes(size - at - 1)) for v in range(256)]
                 if at < size else []  # a 128-byte inode has no i_checksum_hi
                 for at in (CHECKSUM_LO, CHECKSUM_LO + 1, CHECKSUM_HI, CHECKSUM_HI + 1))


def _verify(raw: bytes | memoryview, number: int, generation: int, fs_seed: int, extra: int,
            stored: int) -> None:
    """checksums.rst "Inodes": crc32c from the file system's seed over the inode number,
    the generation and the inode with i_checksum_lo and i_checksum_hi zeroed (the kernel's
    chain of ext4_chksum calls). i_checksum_hi exists only when i_extra_isize reaches past
    it (EXT4_FITS_IN_INODE); otherwise 16 bits are kept and its bytes are checksummed."""
    crc = crc32c_raw(fs_seed, _LE32X2.pack(number, generation) + bytes(raw))
    lo, lo1, hi, hi1 = _zeroing(len(raw))
    crc ^= lo[raw[CHECKSUM_LO]] ^ lo1[raw[CHECKSUM_LO + 1]]
    if len(raw) > GOOD_OLD_INODE_SIZE and GOOD_OLD_INODE_SIZE + extra >= CHECKSUM_HI + 2:
        crc ^= hi[raw[CHECKSUM_HI]] ^ hi1[raw[CHECKSUM_HI + 1]]
    else:
        crc, stored = crc & 0xFFFF, stored & 0xFFFF
    if crc != stored:
        raise VolumeChecksumError(f"inode {number}: checksum mismatch")
