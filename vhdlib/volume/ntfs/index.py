"""Directory index entries ($I30: ``$INDEX_ROOT`` and ``INDX`` blocks of
``$INDEX_ALLOCATION``; libfsntfs "Index root", "Index entry", "File name attribute").

Only what the hibernation check needs: every file name a directory lists, with its record.
Entries are read from every in-use block, not by descending the B-tree, so no ordering
(collation) rule is needed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from vhdlib.volume.errors import VolumeStructureError
from vhdlib.volume.ntfs.record import apply_fixups

ENTRY_LAST = 0x0002  # index entry flags
INDEX_HEADER_SIZE = 16


@dataclass(frozen=True)
class FileName:
    """A ``$FILE_NAME`` value (libfsntfs "File name attribute"): parent and name."""

    parent: int
    name: str

    @classmethod
    def parse(cls, value: bytes) -> FileName:
        if len(value) < 0x42:
            raise VolumeStructureError("$FILE_NAME value truncated")
        (parent,) = struct.unpack_from("<Q", value, 0)
        n = value[0x40]
        if 0x42 + 2 * n > len(value):
            raise VolumeStructureError("$FILE_NAME name outside its value")
        name = value[0x42:0x42 + 2 * n].decode("utf-16-le", errors="replace")
        return cls(parent & 0xFFFFFFFFFFFF, name)


def entries(node: bytes, header_at: int, what: str) -> Iterator[tuple[int, FileName]]:
    """``(record, file name)`` of each entry of the index node whose INDEX_HEADER is at
    ``header_at``."""
    if header_at + INDEX_HEADER_SIZE > len(node):
        raise VolumeStructureError(f"{what}: index header truncated")
    first, used, _alloc = struct.unpack_from("<III", node, header_at)
    pos, end = header_at + first, header_at + used
    if end > len(node) or first < INDEX_HEADER_SIZE:
        raise VolumeStructureError(f"{what}: index entries outside the node")
    while True:
        if pos + 0x10 > end:
            raise VolumeStructureError(f"{what}: index entries run past the node")
        ref, length, key_len, flags = struct.unpack_from("<QHHH", node, pos)
        if length < 0x10 or length % 8 or pos + length > end or 0x10 + key_len > length:
            raise VolumeStructureError(f"{what}: index entry of {length} bytes")
        if flags & ENTRY_LAST:
            return
        yield ref & 0xFFFFFFFFFFFF, FileName.parse(node[pos + 0x10:pos + 0x10 + key_len])
        pos += length


def root_entries(value: bytes) -> Iterator[tuple[int, FileName]]:
    """Entries held in an ``$INDEX_ROOT`` value (its INDEX_HEADER starts at 0x10)."""
    yield from entries(value, 0x10, "$INDEX_ROOT")


def block_entries(raw: bytes, vcn: int) -> Iterator[tuple[int, FileName]]:
    """Entries of one ``INDX`` block (INDEX_HEADER at 0x18) after its fixups."""
    data = apply_fixups(raw, b"INDX", f"index block at VCN {vcn}")
    yield from entries(data, 0x18, f"index block at VCN {vcn}")
