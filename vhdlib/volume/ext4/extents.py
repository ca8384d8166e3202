"""The ext4 extent tree (kernel Documentation/filesystems/ext4/ifork.rst "Extent Tree").

Every node starts with a 12-byte header; an index node (depth > 0) holds
``ext4_extent_idx`` entries pointing at the next level's blocks, a leaf (depth 0)
``ext4_extent`` entries pointing at data. The root lives in ``i_block`` (4 entries); a
node block ends with ``ext4_extent_tail``, whose checksum is verified with metadata_csum.
The checks are the kernel's ``__ext4_ext_check`` and ``ext4_find_extent`` bound.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError
from vhdlib.volume.ext4.checksums import crc32c_raw

MAGIC = 0xF30A  # ifork.rst "eh_magic"
#: ifork.rst "eh_depth": 4 * ((blocksize - 12) / 12) ^ 5 >= 2 ^ 32 (EXT4_MAX_EXTENT_DEPTH).
MAX_DEPTH = 5
#: ifork.rst "ee_len": above this an extent is uninitialized, of ee_len - 32768 blocks.
EXT_INIT_MAX_LEN = 32768
ENTRY = 12
_HEADER = struct.Struct("<HHHH4x")
_INDEX = struct.Struct("<IIH2x")  # ei_block, ei_leaf_lo, ei_leaf_hi
_LEAF = struct.Struct("<IHHI")  # ee_block, ee_len, ee_start_hi, ee_start_lo

#: ``(first block, block count)`` of one physical run.
Run = tuple[int, int]


def _header(raw: bytes, capacity: int, what: str) -> tuple[int, int, int]:
    """``(eh_entries, eh_max, eh_depth)`` of ifork.rst ``struct ext4_extent_header``,
    checked as the kernel's ``__ext4_ext_check`` does; ``capacity`` is how many entries
    fit in the node. A plain tuple: there is one per inode on the walk's hot path."""
    magic, entries, max_entries, depth = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise VolumeStructureError(f"{what}: no extent header magic")
    if not 0 < max_entries <= capacity or entries > max_entries:
        raise VolumeStructureError(f"{what}: extent header of {entries}/{max_entries} entries")
    if depth > MAX_DEPTH:
        raise VolumeStructureError(f"{what}: extent tree depth {depth}")
    if depth and not entries:
        raise VolumeStructureError(f"{what}: empty extent index node")
    return entries, max_entries, depth


def _tail_ok(block: bytes, max_entries: int, seed: int) -> bool:
    """ifork.rst ``ext4_extent_tail``: crc32c(inode seed, the block up to the tail, which
    follows eh_max entries)."""
    end = ENTRY + max_entries * ENTRY
    (stored,) = struct.unpack_from("<I", block, end)
    return crc32c_raw(seed, block[:end]) == stored


def _leaf_runs(node: bytes, entries: int, runs: list[Run], what: str) -> int:
    """Append the runs of a leaf's extents to ``runs``; returns their block count (the
    kernel's ``ext4_valid_extent``: none is empty)."""
    count = 0
    for i in range(ENTRY, ENTRY + entries * ENTRY, ENTRY):
        _lblk, length, hi, lo = _LEAF.unpack_from(node, i)
        if length > EXT_INIT_MAX_LEN:
            length -= EXT_INIT_MAX_LEN
        if not length:
            raise VolumeStructureError(f"{what}: extent of no blocks")
        runs.append((lo | hi << 32, length))
        count += length
    return count


def tree_runs(root: bytes, read_block: Callable[[int, str], bytes], block_size: int,
              budget: int, seed: Callable[[], int] | None, what: str,
              runs: list[Run]) -> None:
    """Append to ``runs`` every physical run the tree rooted in ``root`` (``i_block``)
    owns: its node blocks and its extents, uninitialized ones too. At most ``budget``
    blocks are counted (the inode's i_blocks), so a damaged tree is refused after bounded
    work; node checksums are verified when ``seed`` (the inode's checksum seed, asked only
    for a tree with node blocks) is given. Block numbers are not bound-checked here
    (``read_block`` must)."""
    entries, _max, depth = _header(root, len(root) // ENTRY - 1, what)
    count = 0
    if depth == 0:  # the common case: up to four extents in the inode itself
        count = _leaf_runs(root, entries, runs, what)
    stack = [(root, entries, depth)] if depth else []
    capacity = (block_size - ENTRY) // ENTRY
    while stack:
        node, entries, depth = stack.pop()
        for _lblk, lo, hi in _INDEX.iter_unpack(node[ENTRY:ENTRY + entries * ENTRY]):
            child = lo | hi << 32
            count += 1
            if count > budget:
                raise VolumeStructureError(f"{what}: extents map more blocks than i_blocks")
            runs.append((child, 1))
            block = read_block(child, what)
            where = f"{what} extent block {child}"
            c_entries, c_max, c_depth = _header(block, capacity, where)
            if c_depth != depth - 1:
                raise VolumeStructureError(f"{where}: depth {c_depth}, expected {depth - 1}")
            if seed is not None and not _tail_ok(block, c_max, seed()):
                raise VolumeChecksumError(f"{where}: checksum mismatch")
            if c_depth:
                stack.append((block, c_entries, c_depth))
            else:
                count += _leaf_runs(block, c_entries, runs, what)
    if count > budget:
        raise VolumeStructureError(f"{what}: extents map more blocks than i_blocks")
