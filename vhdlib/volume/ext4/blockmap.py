"""The ext2/3 block map (kernel Documentation/filesystems/ext4/blockmap.rst, ifork.rst
"Direct/Indirect Block Addressing").

``i_block`` holds 15 little-endian 32-bit block numbers: 12 direct ones, then a single,
a double and a triple indirect block; an indirect block is an array of block size / 4
numbers of the next level. 0 is a hole. There is no magic and no checksum (ifork.rst), so
the walk is bounded by the inode's i_blocks.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable

from vhdlib.volume.errors import VolumeStructureError

DIRECT = 12
#: The most bytes of indirect blocks read at once.
MAX_READ = 4 << 20
_I_BLOCK = struct.Struct("<15I")

#: ``(first block, block count)`` of one physical run.
Run = tuple[int, int]


def _numbers(block: bytes) -> array[int]:
    nums = array("I", block)
    if sys.byteorder != "little":
        nums.byteswap()
    return nums


def _runs_of(nums: list[int]) -> list[Run]:
    """Contiguous runs of the non-zero numbers, in order (a file written at once is one
    run per indirect block: that case costs one list comparison)."""
    nums = list(filter(None, nums))  # holes out
    if not nums:
        return []
    first = nums[0]
    if nums[-1] - first == len(nums) - 1 and nums == list(range(first, first + len(nums))):
        return [(first, len(nums))]
    runs: list[Run] = []
    start = prev = first
    for n in nums[1:]:
        if n != prev + 1:
            runs.append((start, prev - start + 1))
            start = n
        prev = n
    runs.append((start, prev - start + 1))
    return runs


def map_runs(i_block: bytes, read_blocks: Callable[[int, int, str], bytes], block_size: int,
             budget: int, what: str, runs: list[Run]) -> None:
    """Append to ``runs`` every physical run the block map in ``i_block`` owns: data
    blocks and the indirect blocks themselves. At most ``budget`` blocks (the inode's
    i_blocks) are counted, and indirect blocks are read only within it, so the work is
    bounded; block numbers are not bound-checked here (``read_blocks(first, count)``
    must). Indirect blocks of one level that lie end to end are read at once: the resize
    inode's are the reserved GDT blocks (special_inodes.rst), a thousand in a row."""
    ptrs = _I_BLOCK.unpack(i_block)
    direct = _runs_of(list(ptrs[:DIRECT]))
    count = _over(direct, 0, budget, what)
    runs += direct
    # (first block, count, level) of indirect blocks end to end: level 1 holds data block
    # numbers, 2 and 3 indirect ones.
    pending = [(ptrs[DIRECT + level - 1], 1, level) for level in (3, 2, 1)
               if ptrs[DIRECT + level - 1]]
    per_block = block_size // 4
    while pending:
        first, n, level = pending.pop()
        count = _over([(first, n)], count, budget, what)
        runs.append((first, n))
        nums = _numbers(read_blocks(first, n, what)).tolist()
        if level == 1:
            data = _runs_of(nums)
            count = _over(data, count, budget, what)
            runs += data
            continue
        longest = max(1, MAX_READ // block_size)
        for i in range(n - 1, -1, -1):  # in order when popped
            children = _runs_of(nums[i * per_block:(i + 1) * per_block])
            pending += [(start + at, min(longest, length - at), level - 1)
                        for start, length in reversed(children)
                        for at in reversed(range(0, length, longest))]


def _over(runs: list[Run], count: int, budget: int, what: str) -> int:
    """``count`` plus the blocks of ``runs``, refused past ``budget``."""
    for _, n in runs:
        count += n
    if count > budget:
        raise VolumeStructureError(f"{what}: block map maps more blocks than i_blocks")
    return count
