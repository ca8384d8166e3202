"""Digests of a disk's blocks by what they read, not by where they live in the file: how
an in-place ``compact --reclaim fs`` verifies itself (issue 13: "verification of the
output compares every byte outside the dropped blocks; the dropped ones must read zero").

Blocks are digested in groups of :func:`group_size` consecutive blocks, in index order.
A group's digest folds every non-zero piece of its blocks with the piece's disk offset
(:func:`vhdlib.ops.windows.digest_update`) on a fixed grid of the disk's offsets, so all-zero
blocks, whether allocated, dropped or never allocated, contribute nothing; moving a block
to another slot changes nothing either. Taken before a block changes and again at the
end, equal digests mean every byte outside the left-out blocks reads as it did.
"""

from __future__ import annotations

from vhdlib.chain import Disk
from vhdlib.extents import ExtentKind
from vhdlib.ops.windows import UNIT, WINDOW, digest_update

_ZERO = bytes(UNIT)


def group_size(block_size: int) -> int:
    """Blocks per digest group: a copy's window, so the journal holds about as many
    digests as a convert's (one per 256 MiB)."""
    return max(1, WINDOW // block_size)


def group_ended(index: int, block_size: int, block_count: int) -> int | None:
    """The group block ``index`` is the last of (a full group, or the disk's last), else
    None: where a group's running digest is complete."""
    per = group_size(block_size)
    if (index + 1) % per == 0 or index + 1 == block_count:
        return index // per
    return None


def fold_block(disk: Disk, index: int, block_size: int, crc: int,
               buf: bytearray) -> tuple[int, bool]:
    """``crc`` with block ``index``'s non-zero pieces folded in, and whether the block
    reads all zeros. ``buf`` (at least ``UNIT`` bytes) is the read buffer."""
    start = index * block_size
    end = min(start + block_size, disk.virtual_size)
    if all(e.kind is not ExtentKind.DATA for e in disk.extents(start, end - start)):
        # The reader's own map says zeros (unallocated, or a VHDX ZERO block): no read.
        return crc, True
    zero = True
    mv = memoryview(buf)
    pos = start
    while pos < end:
        n = min(UNIT - pos % UNIT, end - pos)
        piece = mv[:n]
        disk.readinto(pos, piece)
        if not buf.startswith(memoryview(_ZERO)[:n]):
            zero = False
            crc = digest_update(crc, pos, piece)
        pos += n
    return crc, zero
