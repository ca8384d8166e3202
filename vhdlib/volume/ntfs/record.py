"""MFT records (file record segments) and their attributes (libfsntfs "MFT entry",
"Fix-up values", "MFT attribute"; flatcap's linux-ntfs "FILE Record", "Attribute").

Multi-sector structures (FILE, INDX, RSTR) carry an update sequence: the last two bytes of
every 512-byte stride hold the update sequence number and the real bytes live in the array
(libfsntfs "Fix-up values"); a mismatch means a torn or stale write.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vhdlib.volume.errors import UnsupportedVolumeError, VolumeStructureError
from vhdlib.volume.ntfs import runlist

FIXUP_STRIDE = 512
RECORD_IN_USE = 0x0001

# libfsntfs "Attribute types"
AT_STANDARD_INFORMATION = 0x10
AT_ATTRIBUTE_LIST = 0x20
AT_FILE_NAME = 0x30
AT_VOLUME_INFORMATION = 0x70
AT_DATA = 0x80
AT_INDEX_ROOT = 0x90
AT_INDEX_ALLOCATION = 0xA0
AT_BITMAP_ATTR = 0xB0
AT_END = 0xFFFFFFFF

# libfsntfs "MFT attribute data flags"
ATTR_COMPRESSED = 0x00FF
ATTR_ENCRYPTED = 0x4000
ATTR_SPARSE = 0x8000


def apply_fixups(raw: bytes, signature: bytes, what: str) -> bytes:
    """Check ``signature`` and the update sequence; return the bytes with fixups applied."""
    if raw[:4] != signature:
        raise VolumeStructureError(f"{what}: no {signature.decode()} signature")
    if len(raw) < FIXUP_STRIDE:
        raise VolumeStructureError(f"{what}: {len(raw)} bytes, less than one stride")
    usa_ofs, usa_count = struct.unpack_from("<HH", raw, 4)
    strides = len(raw) // FIXUP_STRIDE
    if usa_count != strides + 1 or usa_ofs < 8 or usa_ofs + 2 * usa_count > len(raw) or (
            usa_ofs & 1):
        raise VolumeStructureError(f"{what}: update sequence array {usa_ofs}/{usa_count}")
    buf = bytearray(raw)
    usn = raw[usa_ofs:usa_ofs + 2]
    for i in range(strides):
        end = (i + 1) * FIXUP_STRIDE
        if buf[end - 2:end] != usn:
            raise VolumeStructureError(f"{what}: update sequence mismatch in stride {i}")
        fix = usa_ofs + 2 * (i + 1)
        buf[end - 2:end] = raw[fix:fix + 2]
    return bytes(buf)


@dataclass(frozen=True)
class Attribute:
    """One attribute: its header, and either its resident value or its run list."""

    type: int
    name: str
    flags: int
    attr_id: int
    resident: bool
    value: bytes  # resident only
    first_vcn: int  # non-resident only
    last_vcn: int
    allocated_size: int
    data_size: int
    initialized_size: int
    runs: tuple[runlist.Run, ...]

    @classmethod
    def parse(cls, raw: bytes, total_clusters: int) -> Attribute:
        """Decode one attribute record (``raw`` exactly its length)."""
        atype, length, nonres, name_len, name_ofs, flags, attr_id = struct.unpack_from(
            "<IIBBHHH", raw)
        if name_len and name_ofs + 2 * name_len > length:
            raise VolumeStructureError(f"attribute {atype:#x}: name outside the attribute")
        name = raw[name_ofs:name_ofs + 2 * name_len].decode("utf-16-le", errors="replace")
        if not nonres:
            vlen, vofs = struct.unpack_from("<IH", raw, 0x10)
            if vofs + vlen > length:
                raise VolumeStructureError(f"attribute {atype:#x}: value outside the attribute")
            return cls(atype, name, flags, attr_id, True, raw[vofs:vofs + vlen], 0, 0, vlen,
                       vlen, vlen, ())
        if length < 0x40:
            raise VolumeStructureError(f"attribute {atype:#x}: non-resident header truncated")
        first, last, rl_ofs, _cu, alloc, dsize, isize = struct.unpack_from(
            "<QQHH4xQQQ", raw, 0x10)
        if rl_ofs >= length or first > last + 1 or dsize > alloc or isize > dsize:
            raise VolumeStructureError(f"attribute {atype:#x}: inconsistent non-resident header")
        runs = runlist.decode(raw[rl_ofs:length], first, total_clusters)
        end_vcn = runs[-1].vcn + runs[-1].length if runs else first
        if end_vcn != last + 1:
            raise VolumeStructureError(
                f"attribute {atype:#x}: runs end at VCN {end_vcn}, header says {last + 1}")
        return cls(atype, name, flags, attr_id, False, b"", first, last, alloc, dsize, isize,
                   tuple(runs))


def marked_in_use(raw: bytes) -> bool:
    """True when a raw file record (before fixups) is a record at all (``FILE``) and its
    header's flags say in use (libfsntfs "MFT entry header": flags at 0x16, never a fixup
    position): the records a walk over the $MFT must parse."""
    return raw[:4] == b"FILE" and bool(struct.unpack_from("<H", raw, 0x16)[0] & RECORD_IN_USE)


@dataclass(frozen=True)
class MftRecord:
    """A file record segment after fixups: header fields and its attributes."""

    number: int
    flags: int
    base_reference: int
    attributes: tuple[Attribute, ...]

    @classmethod
    def parse(cls, raw: bytes, number: int, total_clusters: int) -> MftRecord:
        """Apply fixups and decode record ``number`` (libfsntfs "MFT entry header")."""
        data = apply_fixups(raw, b"FILE", f"MFT record {number}")
        first_attr, flags, used, allocated, base = struct.unpack_from("<HHIIQ", data, 0x14)
        if allocated != len(raw) or not 0x30 <= first_attr < used <= allocated:
            raise VolumeStructureError(f"MFT record {number}: sizes {first_attr}/{used}")
        # NTFS 3.1 records (update sequence at 0x30) store their own number at 0x2C.
        if struct.unpack_from("<H", data, 4)[0] >= 0x30 and (
                struct.unpack_from("<I", data, 0x2C)[0] != number):
            raise VolumeStructureError(f"MFT record {number} names another record number")
        attrs = []
        pos = first_attr
        while True:
            if pos + 8 > used:
                raise VolumeStructureError(f"MFT record {number}: attributes run past the end")
            atype, length = struct.unpack_from("<II", data, pos)
            if atype == AT_END:
                break
            if length < 0x18 or length % 8 or pos + length > used:
                raise VolumeStructureError(f"MFT record {number}: attribute length {length}")
            attrs.append(Attribute.parse(data[pos:pos + length], total_clusters))
            pos += length
        return cls(number, flags, base & 0xFFFFFFFFFFFF, tuple(attrs))

    @property
    def in_use(self) -> bool:
        return bool(self.flags & RECORD_IN_USE)

    def find(self, atype: int, name: str = "") -> list[Attribute]:
        return [a for a in self.attributes if a.type == atype and a.name == name]


def plain(attr: Attribute, what: str) -> Attribute:
    """Refuse compressed or encrypted data, whose runs do not map VCNs to bytes."""
    if attr.flags & (ATTR_COMPRESSED | ATTR_ENCRYPTED):
        raise UnsupportedVolumeError(f"{what} is compressed or encrypted")
    return attr
