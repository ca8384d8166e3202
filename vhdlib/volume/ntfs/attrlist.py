"""``$ATTRIBUTE_LIST`` entries (libfsntfs "Attribute list attribute"; flatcap's linux-ntfs
"$ATTRIBUTE_LIST"): where the segments of a file's attributes live when one record cannot
hold them all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vhdlib.volume.errors import VolumeStructureError

_ENTRY = struct.Struct("<IHBBQQH")


@dataclass(frozen=True)
class AttrListEntry:
    """One entry: attribute ``type``/``name`` starting at ``first_vcn`` in ``record``."""

    type: int
    name: str
    first_vcn: int
    record: int
    attr_id: int

    @classmethod
    def parse_all(cls, value: bytes) -> list[AttrListEntry]:
        out = []
        pos = 0
        while pos + _ENTRY.size <= len(value):
            atype, length, name_len, name_ofs, vcn, ref, attr_id = _ENTRY.unpack_from(value, pos)
            if length < _ENTRY.size or length % 8 or pos + length > len(value) or (
                    name_len and name_ofs + 2 * name_len > length):
                raise VolumeStructureError(f"attribute list entry of {length} bytes at {pos}")
            raw_name = value[pos + name_ofs:pos + name_ofs + 2 * name_len]
            out.append(cls(atype, raw_name.decode("utf-16-le", errors="replace"), vcn,
                           ref & 0xFFFFFFFFFFFF, attr_id))
            pos += length
        if pos != len(value) and any(value[pos:]):
            raise VolumeStructureError("attribute list ends inside an entry")
        return out
