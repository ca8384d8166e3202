"""VHDX on-disk structures (MS-VHDX v1.0): declarations only, no behaviour.

Every structure is little-endian (MS-VHDX 2.1: "all fields are stored in little-endian
format"); the byte order is declared once, in :data:`LE`. Each structure has ``parse`` (from
bytes), ``new`` (defaults for a fresh file) and ``serialize`` (to bytes), and round-trips.
GUIDs are stored in the Windows mixed-endian layout (``uuid.UUID(bytes_le=...)``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from uuid import UUID

from vhdlib.checksum import crc32c

#: Byte order of every VHDX structure (MS-VHDX 2.1).
LE = "<"

KiB = 1024
MiB = 1024 * KiB

# --- layout (MS-VHDX 2.1, figure 2) ---------------------------------------------------------
FILE_IDENTIFIER_OFFSET = 0
HEADER1_OFFSET = 64 * KiB
HEADER2_OFFSET = 128 * KiB
REGION_TABLE1_OFFSET = 192 * KiB
REGION_TABLE2_OFFSET = 256 * KiB
HEADER_SIZE = 4 * KiB          # the CRC covers 4 KiB (2.2.2)
REGION_TABLE_SIZE = 64 * KiB   # the CRC covers 64 KiB (2.2.3)
#: Objects (regions, payload blocks) are 1 MiB aligned (2.2.3.1, 2.5).
OBJECT_ALIGNMENT = 1 * MiB
LOG_SECTOR_SIZE = 4 * KiB      # 2.3
METADATA_TABLE_SIZE = 64 * KiB  # 2.6.1
SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB  # 2.5.1.2
#: Sectors one sector-bitmap block describes: 1 MiB * 8 bits (2.5: chunk ratio formula).
SECTORS_PER_BITMAP_BLOCK = SECTOR_BITMAP_BLOCK_SIZE * 8

MIN_BLOCK_SIZE = 1 * MiB       # 2.6.2.1
MAX_BLOCK_SIZE = 256 * MiB
MAX_VIRTUAL_SIZE = 64 * 1024 ** 4  # 64 TiB (2.6.2.2)
MAX_REGION_ENTRIES = 2047      # 2.2.3
MAX_METADATA_ENTRIES = 2047    # 2.6.1.1

FILE_SIGNATURE = b"vhdxfile"
HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
LOG_ENTRY_SIGNATURE = b"loge"
ZERO_DESC_SIGNATURE = b"zero"
DATA_DESC_SIGNATURE = b"desc"
DATA_SECTOR_SIGNATURE = b"data"
METADATA_SIGNATURE = b"metadata"

# --- GUIDs (the spec's names) ------------------------------------------------------------------
BAT_REGION_GUID = UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")           # 2.2.3.1
METADATA_REGION_GUID = UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")      # 2.2.3.1
FILE_PARAMETERS_GUID = UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")      # 2.6.2.1
VIRTUAL_DISK_SIZE_GUID = UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")    # 2.6.2.2
PAGE83_DATA_GUID = UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")          # 2.6.2.3
LOGICAL_SECTOR_SIZE_GUID = UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")  # 2.6.2.4
PHYSICAL_SECTOR_SIZE_GUID = UUID("CDA348C7-445D-4471-9CC9-E9885251C556")  # 2.6.2.5
PARENT_LOCATOR_GUID = UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")       # 2.6.2.6
VHDX_PARENT_LOCATOR_TYPE_GUID = UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")  # 2.6.2.6.1
ZERO_GUID = UUID(int=0)

# --- BAT entry states (2.5.1.1, 2.5.1.2) -----------------------------------------------------
PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3
#: Draft 0.95 of the spec numbered UNMAPPED 5; old writers may still use it.
PAYLOAD_BLOCK_UNMAPPED_V095 = 5
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
SB_BLOCK_NOT_PRESENT = 0
SB_BLOCK_PRESENT = 6

PAYLOAD_STATE_NAMES = {
    PAYLOAD_BLOCK_NOT_PRESENT: "not_present",
    PAYLOAD_BLOCK_UNDEFINED: "undefined",
    PAYLOAD_BLOCK_ZERO: "zero",
    PAYLOAD_BLOCK_UNMAPPED: "unmapped",
    PAYLOAD_BLOCK_UNMAPPED_V095: "unmapped",
    PAYLOAD_BLOCK_FULLY_PRESENT: "fully_present",
    PAYLOAD_BLOCK_PARTIALLY_PRESENT: "partially_present",
}

# Metadata entry flags (2.6.1.2).
META_IS_USER = 1
META_IS_VIRTUAL_DISK = 2
META_IS_REQUIRED = 4

# File parameters flags (2.6.2.1).
FP_LEAVE_BLOCKS_ALLOCATED = 1
FP_HAS_PARENT = 2


class StructError(ValueError):
    """A structure does not parse (bad signature, length, count). Translated by callers."""


#: The spec's fixed GUIDs by their on-disk bytes: every file names them, and a UUID costs
#: more to build than to look up (UUIDs are immutable, so one instance serves all).
_KNOWN_GUIDS = {g.bytes_le: g for g in (
    BAT_REGION_GUID, METADATA_REGION_GUID, FILE_PARAMETERS_GUID, VIRTUAL_DISK_SIZE_GUID,
    PAGE83_DATA_GUID, LOGICAL_SECTOR_SIZE_GUID, PHYSICAL_SECTOR_SIZE_GUID, PARENT_LOCATOR_GUID,
    VHDX_PARENT_LOCATOR_TYPE_GUID, ZERO_GUID)}


def guid(b: bytes) -> UUID:
    """A GUID from its 16 on-disk bytes (Windows mixed-endian layout)."""
    raw = bytes(b)
    known = _KNOWN_GUIDS.get(raw)
    return known if known is not None else UUID(bytes_le=raw)


def _crc_with_zeroed(data: bytes | bytearray, at: int) -> int:
    """CRC-32C of ``data`` with the 4-byte checksum field at ``at`` counted as zero (2.2.2)."""
    view = memoryview(data)
    return crc32c(view[at + 4:], crc32c(b"\0\0\0\0", crc32c(view[:at])))


# --- file identifier (2.2.1) -----------------------------------------------------------------

@dataclass
class FileIdentifier:
    """The first 64 KiB: signature and the creator string (UTF-16LE, 512 bytes)."""

    creator: str = ""

    SIZE = 64 * KiB

    @classmethod
    def parse(cls, data: bytes) -> FileIdentifier:
        if data[:8] != FILE_SIGNATURE:
            raise StructError("no 'vhdxfile' file identifier")
        raw = data[8:8 + 512]
        text = raw.decode("utf-16-le", errors="replace")
        return cls(text.split("\0", 1)[0])

    @classmethod
    def new(cls, creator: str) -> FileIdentifier:
        return cls(creator)

    def serialize(self) -> bytes:
        raw = self.creator.encode("utf-16-le")[:510]
        return FILE_SIGNATURE + raw + bytes(self.SIZE - 8 - len(raw))


# --- header (2.2.2) --------------------------------------------------------------------------

_HEADER = struct.Struct(LE + "4sIQ16s16s16sHHIQ")


@dataclass
class Header:
    """One of the two headers. ``checksum`` is the stored CRC; ``valid`` says it matched."""

    sequence_number: int
    file_write_guid: UUID
    data_write_guid: UUID
    log_guid: UUID
    log_version: int = 0
    version: int = 1
    log_length: int = 1 * MiB
    log_offset: int = 1 * MiB
    checksum: int = 0
    valid: bool = True

    @classmethod
    def parse(cls, data: bytes) -> Header:
        if len(data) < HEADER_SIZE:
            raise StructError("header truncated")
        sig, csum, seq, fwg, dwg, lg, lver, ver, llen, loff = _HEADER.unpack_from(data)
        if sig != HEADER_SIGNATURE:
            raise StructError("bad header signature")
        ok = _crc_with_zeroed(data[:HEADER_SIZE], 4) == csum
        return cls(seq, guid(fwg), guid(dwg), guid(lg), lver, ver, llen, loff, csum, ok)

    @classmethod
    def new(cls, sequence_number: int, file_write_guid: UUID, data_write_guid: UUID,
            log_offset: int, log_length: int) -> Header:
        return cls(sequence_number, file_write_guid, data_write_guid, ZERO_GUID,
                   log_offset=log_offset, log_length=log_length)

    def serialize(self) -> bytes:
        buf = bytearray(HEADER_SIZE)
        _HEADER.pack_into(buf, 0, HEADER_SIGNATURE, 0, self.sequence_number,
                          self.file_write_guid.bytes_le, self.data_write_guid.bytes_le,
                          self.log_guid.bytes_le, self.log_version, self.version,
                          self.log_length, self.log_offset)
        crc = crc32c(buf)
        struct.pack_into(LE + "I", buf, 4, crc)
        return bytes(buf)

    def copy(self, **changes: object) -> Header:
        return replace(self, **changes)  # type: ignore[arg-type]


# --- region table (2.2.3) --------------------------------------------------------------------

_REGION_HDR = struct.Struct(LE + "4sIII")
_REGION_ENTRY = struct.Struct(LE + "16sQII")


@dataclass
class RegionEntry:
    guid: UUID
    file_offset: int
    length: int
    required: bool

    def serialize(self) -> bytes:
        return _REGION_ENTRY.pack(self.guid.bytes_le, self.file_offset, self.length,
                                  1 if self.required else 0)


@dataclass
class RegionTable:
    entries: list[RegionEntry] = field(default_factory=list)
    checksum: int = 0
    valid: bool = True

    @classmethod
    def parse(cls, data: bytes) -> RegionTable:
        if len(data) < REGION_TABLE_SIZE:
            raise StructError("region table truncated")
        sig, csum, count, _ = _REGION_HDR.unpack_from(data)
        if sig != REGION_SIGNATURE:
            raise StructError("bad region table signature")
        ok = _crc_with_zeroed(data[:REGION_TABLE_SIZE], 4) == csum
        if count > MAX_REGION_ENTRIES:
            raise StructError(f"region table lists {count} entries (max 2047)")
        entries = []
        for i in range(count):
            g, off, length, flags = _REGION_ENTRY.unpack_from(data, 16 + 32 * i)
            entries.append(RegionEntry(guid(g), off, length, bool(flags & 1)))
        return cls(entries, csum, ok)

    @classmethod
    def new(cls, entries: list[RegionEntry]) -> RegionTable:
        return cls(list(entries))

    def serialize(self) -> bytes:
        buf = bytearray(REGION_TABLE_SIZE)
        _REGION_HDR.pack_into(buf, 0, REGION_SIGNATURE, 0, len(self.entries), 0)
        for i, e in enumerate(self.entries):
            buf[16 + 32 * i: 48 + 32 * i] = e.serialize()
        struct.pack_into(LE + "I", buf, 4, crc32c(buf))
        return bytes(buf)

    def find(self, g: UUID) -> RegionEntry | None:
        for e in self.entries:
            if e.guid == g:
                return e
        return None


# --- log (2.3.1) -----------------------------------------------------------------------------

_LOG_HDR = struct.Struct(LE + "4sIIIQII16sQQ")
LOG_ENTRY_HEADER_SIZE = _LOG_HDR.size  # 64
_ZERO_DESC = struct.Struct(LE + "4sIQQQ")
_DATA_DESC = struct.Struct(LE + "4s4s8sQQ")
DESCRIPTOR_SIZE = 32
_DATA_SECTOR = struct.Struct(LE + "4sI")


@dataclass
class LogEntryHeader:
    """The 64-byte header of a log entry (2.3.1.1)."""

    entry_length: int
    tail: int
    sequence_number: int
    descriptor_count: int
    log_guid: UUID
    flushed_file_offset: int
    last_file_offset: int
    checksum: int = 0

    @classmethod
    def parse(cls, data: bytes) -> LogEntryHeader:
        if len(data) < LOG_ENTRY_HEADER_SIZE:
            raise StructError("log entry header truncated")
        sig, csum, elen, tail, seq, dcount, _, lg, ffo, lfo = _LOG_HDR.unpack_from(data)
        if sig != LOG_ENTRY_SIGNATURE:
            raise StructError("bad log entry signature")
        return cls(elen, tail, seq, dcount, guid(lg), ffo, lfo, csum)

    @classmethod
    def new(cls, entry_length: int, tail: int, sequence_number: int, descriptor_count: int,
            log_guid: UUID, flushed_file_offset: int, last_file_offset: int) -> LogEntryHeader:
        return cls(entry_length, tail, sequence_number, descriptor_count, log_guid,
                   flushed_file_offset, last_file_offset)

    def serialize(self) -> bytes:
        return _LOG_HDR.pack(LOG_ENTRY_SIGNATURE, self.checksum, self.entry_length, self.tail,
                             self.sequence_number, self.descriptor_count, 0,
                             self.log_guid.bytes_le, self.flushed_file_offset,
                             self.last_file_offset)


@dataclass
class ZeroDescriptor:
    """Zero ``zero_length`` bytes at ``file_offset`` (2.3.1.2)."""

    zero_length: int
    file_offset: int
    sequence_number: int

    @classmethod
    def parse(cls, data: bytes) -> ZeroDescriptor:
        sig, _, length, off, seq = _ZERO_DESC.unpack_from(data)
        if sig != ZERO_DESC_SIGNATURE:
            raise StructError("bad zero descriptor signature")
        return cls(length, off, seq)

    @classmethod
    def new(cls, zero_length: int, file_offset: int, sequence_number: int) -> ZeroDescriptor:
        return cls(zero_length, file_offset, sequence_number)

    def serialize(self) -> bytes:
        return _ZERO_DESC.pack(ZERO_DESC_SIGNATURE, 0, self.zero_length, self.file_offset,
                               self.sequence_number)


@dataclass
class DataDescriptor:
    """Write one 4 KiB sector at ``file_offset`` (2.3.1.3).

    The sector is ``leading_bytes`` (8) + the data sector's 4084 bytes + ``trailing_bytes``
    (4): the data sector's own first and last bytes hold its signature and sequence halves.
    """

    trailing_bytes: bytes
    leading_bytes: bytes
    file_offset: int
    sequence_number: int

    @classmethod
    def parse(cls, data: bytes) -> DataDescriptor:
        sig, trailing, leading, off, seq = _DATA_DESC.unpack_from(data)
        if sig != DATA_DESC_SIGNATURE:
            raise StructError("bad data descriptor signature")
        return cls(trailing, leading, off, seq)

    @classmethod
    def new(cls, sector: bytes, file_offset: int, sequence_number: int) -> DataDescriptor:
        return cls(sector[4092:4096], sector[0:8], file_offset, sequence_number)

    def serialize(self) -> bytes:
        return _DATA_DESC.pack(DATA_DESC_SIGNATURE, self.trailing_bytes, self.leading_bytes,
                               self.file_offset, self.sequence_number)


@dataclass
class DataSector:
    """A 4 KiB log data sector (2.3.1.4): 4084 bytes of payload between sequence halves."""

    sequence_high: int
    data: bytes
    sequence_low: int

    @classmethod
    def parse(cls, raw: bytes) -> DataSector:
        sig, high = _DATA_SECTOR.unpack_from(raw)
        if sig != DATA_SECTOR_SIGNATURE:
            raise StructError("bad data sector signature")
        (low,) = struct.unpack_from(LE + "I", raw, 4092)
        return cls(high, bytes(raw[8:4092]), low)

    @classmethod
    def new(cls, sector: bytes, sequence_number: int) -> DataSector:
        return cls(sequence_number >> 32, bytes(sector[8:4092]), sequence_number & 0xFFFFFFFF)

    def serialize(self) -> bytes:
        return (_DATA_SECTOR.pack(DATA_SECTOR_SIGNATURE, self.sequence_high) + self.data
                + struct.pack(LE + "I", self.sequence_low))

    @property
    def sequence_number(self) -> int:
        return (self.sequence_high << 32) | self.sequence_low


# --- metadata (2.6) --------------------------------------------------------------------------

_META_HDR = struct.Struct(LE + "8sHH20x")
_META_ENTRY = struct.Struct(LE + "16sIII4x")


@dataclass
class MetadataEntry:
    item_id: UUID
    offset: int
    length: int
    is_user: bool = False
    is_virtual_disk: bool = False
    is_required: bool = False

    @property
    def flags(self) -> int:
        return ((META_IS_USER if self.is_user else 0)
                | (META_IS_VIRTUAL_DISK if self.is_virtual_disk else 0)
                | (META_IS_REQUIRED if self.is_required else 0))


@dataclass
class MetadataTable:
    """The metadata table at the start of the metadata region (2.6.1)."""

    entries: list[MetadataEntry] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> MetadataTable:
        if len(data) < METADATA_TABLE_SIZE:
            raise StructError("metadata table truncated")
        sig, _, count = _META_HDR.unpack_from(data)
        if sig != METADATA_SIGNATURE:
            raise StructError("bad metadata table signature")
        if count > MAX_METADATA_ENTRIES:
            raise StructError(f"metadata table lists {count} entries (max 2047)")
        entries = []
        for i in range(count):
            g, off, length, flags = _META_ENTRY.unpack_from(data, 32 + 32 * i)
            entries.append(MetadataEntry(guid(g), off, length, bool(flags & META_IS_USER),
                                         bool(flags & META_IS_VIRTUAL_DISK),
                                         bool(flags & META_IS_REQUIRED)))
        return cls(entries)

    @classmethod
    def new(cls, entries: list[MetadataEntry]) -> MetadataTable:
        return cls(list(entries))

    def serialize(self) -> bytes:
        buf = bytearray(METADATA_TABLE_SIZE)
        _META_HDR.pack_into(buf, 0, METADATA_SIGNATURE, 0, len(self.entries))
        for i, e in enumerate(self.entries):
            _META_ENTRY.pack_into(buf, 32 + 32 * i, e.item_id.bytes_le, e.offset, e.length,
                                  e.flags)
        return bytes(buf)

    def find(self, g: UUID) -> MetadataEntry | None:
        for e in self.entries:
            if e.item_id == g and not e.is_user:
                return e
        return None


_FILE_PARAMS = struct.Struct(LE + "II")


@dataclass
class FileParameters:
    """Block size and flags (2.6.2.1)."""

    block_size: int
    leave_blocks_allocated: bool = False
    has_parent: bool = False

    SIZE = _FILE_PARAMS.size

    @classmethod
    def parse(cls, data: bytes) -> FileParameters:
        bs, flags = _FILE_PARAMS.unpack_from(data)
        return cls(bs, bool(flags & FP_LEAVE_BLOCKS_ALLOCATED), bool(flags & FP_HAS_PARENT))

    @classmethod
    def new(cls, block_size: int, leave_blocks_allocated: bool, has_parent: bool
            ) -> FileParameters:
        return cls(block_size, leave_blocks_allocated, has_parent)

    def serialize(self) -> bytes:
        return _FILE_PARAMS.pack(self.block_size,
                                 (FP_LEAVE_BLOCKS_ALLOCATED if self.leave_blocks_allocated
                                  else 0) | (FP_HAS_PARENT if self.has_parent else 0))


def parse_u64(data: bytes) -> int:
    """Virtual disk size item (2.6.2.2)."""
    return int(struct.unpack_from(LE + "Q", data)[0])


def serialize_u64(value: int) -> bytes:
    return struct.pack(LE + "Q", value)


def parse_u32(data: bytes) -> int:
    """Logical / physical sector size items (2.6.2.4, 2.6.2.5)."""
    return int(struct.unpack_from(LE + "I", data)[0])


def serialize_u32(value: int) -> bytes:
    return struct.pack(LE + "I", value)


_PL_HDR = struct.Struct(LE + "16sHH")
_PL_ENTRY = struct.Struct(LE + "IIHH")


@dataclass
class ParentLocator:
    """Parent locator (2.6.2.6): a type GUID and UTF-16LE key/value pairs, in file order."""

    locator_type: UUID = VHDX_PARENT_LOCATOR_TYPE_GUID
    entries: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> ParentLocator:
        if len(data) < _PL_HDR.size:
            raise StructError("parent locator truncated")
        t, _, count = _PL_HDR.unpack_from(data)
        if _PL_HDR.size + count * _PL_ENTRY.size > len(data):
            raise StructError(f"parent locator lists {count} entries beyond its length")
        entries = []
        for i in range(count):
            ko, vo, kl, vl = _PL_ENTRY.unpack_from(data, _PL_HDR.size + i * _PL_ENTRY.size)
            if ko + kl > len(data) or vo + vl > len(data) or kl == 0:
                raise StructError("parent locator key or value outside the item")
            key = data[ko:ko + kl].decode("utf-16-le", errors="strict")
            value = data[vo:vo + vl].decode("utf-16-le", errors="strict")
            entries.append((key, value))
        return cls(guid(t), entries)

    @classmethod
    def new(cls, entries: list[tuple[str, str]]) -> ParentLocator:
        return cls(VHDX_PARENT_LOCATOR_TYPE_GUID, list(entries))

    def serialize(self) -> bytes:
        head = bytearray(_PL_HDR.pack(self.locator_type.bytes_le, 0, len(self.entries)))
        table_end = _PL_HDR.size + _PL_ENTRY.size * len(self.entries)
        blobs = bytearray()
        for key, value in self.entries:
            kb, vb = key.encode("utf-16-le"), value.encode("utf-16-le")
            ko = table_end + len(blobs)
            blobs += kb
            vo = table_end + len(blobs)
            blobs += vb
            head += _PL_ENTRY.pack(ko, vo, len(kb), len(vb))
        return bytes(head + blobs)

    def get(self, key: str) -> str | None:
        for k, v in self.entries:
            if k == key:
                return v
        return None


# --- BAT (2.5) -------------------------------------------------------------------------------

#: BAT entry: state in bits 0-2, FileOffsetMB in bits 20-63 (2.5.1).
BAT_STATE_MASK = 0x7
BAT_OFFSET_SHIFT = 20


def bat_entry(state: int, file_offset: int) -> int:
    """Pack a BAT entry; ``file_offset`` must be 1 MiB aligned."""
    return (file_offset >> BAT_OFFSET_SHIFT) << BAT_OFFSET_SHIFT | state


def bat_state(entry: int) -> int:
    return entry & BAT_STATE_MASK


def bat_offset(entry: int) -> int:
    """File offset in bytes (FileOffsetMB * 1 MiB)."""
    return (entry >> BAT_OFFSET_SHIFT) << BAT_OFFSET_SHIFT


def chunk_ratio(block_size: int, logical_sector_size: int) -> int:
    """Payload blocks described by one sector bitmap block (2.5): 2^23 * sector / block."""
    return (SECTORS_PER_BITMAP_BLOCK * logical_sector_size) // block_size


def bat_entry_count(virtual_size: int, block_size: int, logical_sector_size: int,
                    has_parent: bool) -> int:
    """Total BAT entries (2.5): payload entries with a bitmap entry after every chunk."""
    ratio = chunk_ratio(block_size, logical_sector_size)
    data_blocks = -(-virtual_size // block_size)
    bitmap_blocks = -(-data_blocks // ratio)
    if has_parent:
        return bitmap_blocks * (ratio + 1)
    return data_blocks + (data_blocks - 1) // ratio if data_blocks else 0
