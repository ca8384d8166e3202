"""Every block an in-use inode owns must be marked used in the block bitmaps.

Without metadata_csum a block bitmap has no checksum, and with it a tool may have re-signed
a damaged one (``debugfs -w -R "freeb N"``); believing a bitmap that frees a file's block
would drop live data. So (issue 13, "when in doubt, keep") each in-use inode's blocks are
collected as the kernel and e2fsck find them: its extent tree (nodes and extents,
uninitialized ones too: extents.py) or ext2/3 block map (data and indirect blocks:
blockmap.py), and its extended attribute block (attributes.rst, ``i_file_acl``). Each must
lie inside the volume and be marked used, and no inode may map more blocks than its
i_blocks counts (which bounds the work on a damaged inode). The journal (8) and resize (7)
inodes are walked like any other: the resize inode's block map lists the reserved GDT
blocks (special_inodes.rst), already marked used as fixed metadata.
"""

from __future__ import annotations

from vhdlib.volume.errors import VolumeStructureError
from vhdlib.volume.ext4 import blockmap, extents, itable
from vhdlib.volume.ext4.bitmap import VolumeBitmap
from vhdlib.volume.ext4.descriptors import GroupDescriptor
from vhdlib.volume.ext4.inode import EXT4_EXTENTS_FL, Inode
from vhdlib.volume.ext4.superblock import Superblock
from vhdlib.volume.ranges import Range
from vhdlib.volume.source import Window

#: ``(first block, block count)`` of one physical run.
Run = Range


class OwnedBlocks:
    """Checks inodes' blocks against ``bitmap``: the groups' block bitmaps, the ones the
    free ranges come from."""

    def __init__(self, win: Window, sb: Superblock, bitmap: VolumeBitmap) -> None:
        self.win, self.sb, self.bitmap = win, sb, bitmap
        self._shift = sb.cluster_ratio.bit_length() - 1
        self._sectors_shift = sb.log_block_size + 1  # i_blocks counts 512-byte units

    def require(self, start: int, count: int, what: str) -> None:
        """Blocks ``[start, start + count)`` lie in the volume and are marked used; the
        kernel's ``ext4_sb_block_valid`` also refuses the superblock's block (and the
        boot block before it with 1 KiB blocks)."""
        sb = self.sb
        if start <= sb.first_data_block or start + count > sb.blocks_count:
            raise VolumeStructureError(f"{what}: block {start}+{count} outside the volume")
        first = (start - sb.first_data_block) >> self._shift
        last = (start + count - 1 - sb.first_data_block) >> self._shift
        clear = self.bitmap.first_clear(first, last - first + 1)
        if clear is not None:
            block = max(start, sb.first_data_block + (clear << self._shift))
            raise VolumeStructureError(
                f"{what}: block {block} is in use but the block bitmap marks it free")

    def _read(self, block: int, what: str) -> bytes:
        return self._read_run(block, 1, what)

    def _read_run(self, first: int, count: int, what: str) -> bytes:
        # Node and indirect blocks are owned too: checking them first means a damaged
        # pointer is refused before it is read, and only used blocks are ever read.
        self.require(first, count, what)
        return self.win.read(first * self.sb.block_size, count * self.sb.block_size)

    def runs(self, inode: Inode, runs: list[Run]) -> None:
        """Append every run ``inode`` owns to ``runs``; node and indirect blocks are
        required as they are read. Raises VolumeStructureError naming the inode."""
        sb = self.sb
        what = f"inode {inode.number}"
        budget = inode.sectors >> self._sectors_shift
        if budget > sb.blocks_count:
            budget = sb.blocks_count
        if inode.file_acl:
            runs.append((inode.file_acl, 1))
            budget -= 1  # i_blocks counts the xattr block too (e2fsck's check_blocks)
            if budget < 0:
                raise VolumeStructureError(f"{what}: xattr block not counted in i_blocks")
        if not inode.has_block_map(sb):
            return
        if inode.flags & EXT4_EXTENTS_FL:
            if not sb.extents:
                raise VolumeStructureError(f"{what}: extents on a volume without them")
            seed = (lambda: inode.csum_seed(sb)) if sb.metadata_csum else None
            extents.tree_runs(inode.i_block, self._read, sb.block_size, budget, seed, what,
                              runs)
        else:
            blockmap.map_runs(inode.i_block, self._read_run, sb.block_size, budget, what,
                              runs)

    def check(self, inode: Inode) -> None:
        """Require every block ``inode`` owns."""
        runs: list[Run] = []
        self.runs(inode, runs)
        for start, count in runs:
            self.require(start, count, f"inode {inode.number}")

    def all_used(self, runs: list[Run]) -> bool:
        """Whether every run of ``runs`` (many inodes' at once, sorted in place) lies in
        the volume and is marked used: merged first, since the files of a volume mostly
        lie end to end, so the bitmap is tested a few times instead of once per file."""
        if not runs:
            return True
        runs.sort()
        if runs[0][0] <= self.sb.first_data_block:
            return False
        lo = hi = runs[0][0]
        for start, count in runs:
            if start > hi:
                if not self._span_used(lo, hi):
                    return False
                lo = start
            hi = max(hi, start + count)
        return hi <= self.sb.blocks_count and self._span_used(lo, hi)

    def _span_used(self, lo: int, hi: int) -> bool:
        """Every cluster holding blocks ``[lo, hi)`` is marked used."""
        first = (lo - self.sb.first_data_block) >> self._shift
        last = (hi - 1 - self.sb.first_data_block) >> self._shift
        return self.bitmap.first_clear(first, last - first + 1) is None


#: Runs checked at once (bounds the memory of a walk over millions of files).
BATCH = 1 << 16


def require_owned_used(win: Window, sb: Superblock, descs: list[GroupDescriptor],
                       bitmap: VolumeBitmap) -> None:
    """Walk every in-use inode (itable.py) and require the blocks it owns. The runs are
    tested in batches; when a batch fails, the walk is repeated inode by inode, so the
    error names the inode and the block."""
    owned = OwnedBlocks(win, sb, bitmap)
    batch: list[Run] = []
    for inode in itable.in_use_inodes(win, sb, descs):
        owned.runs(inode, batch)
        if len(batch) >= BATCH:
            if not owned.all_used(batch):
                break
            batch.clear()
    else:
        if owned.all_used(batch):
            return
    for inode in itable.in_use_inodes(win, sb, descs):
        owned.check(inode)
    raise VolumeStructureError("ext4: a block an inode owns is free or outside the volume")
