"""VHD on-disk structures (Microsoft "Virtual Hard Disk Image Format Specification" 1.0).

Declarations only: the byte layouts, the spec's constants and ``parse`` / ``new`` /
``serialize`` for every structure, so each one round-trips. Behaviour lives in
:mod:`vhdlib.vhd`. Every structure is big-endian (spec, "Hard Disk Footer Format": "all
values are stored in network byte order"); the ``>`` is declared once per table below.
"""

from __future__ import annotations

import struct
import sys
import time
from array import array
from dataclasses import dataclass, field, replace
from typing import TypeVar
from uuid import UUID

from vhdlib.checksum import vhd_checksum
from vhdlib.errors import ImageError

SECTOR_SIZE = 512

# --- Hard Disk Footer (spec, "Hard Disk Footer Format") ----------------------------------
FOOTER_COOKIE = b"conectix"
FOOTER_SIZE = 512
#: Some old writers (early Virtual PC) wrote a 511-byte footer (spec: "versions prior to
#: Microsoft Virtual PC 2004 create disk images that have a 511-byte disk footer").
FOOTER_SIZE_OLD = 511
FEATURES_NONE = 0x00000000
FEATURES_TEMPORARY = 0x00000001
FEATURES_RESERVED = 0x00000002  # "must always be set to 1"
FILE_FORMAT_VERSION = 0x00010000
#: Data Offset of a fixed disk: "set to 0xFFFFFFFF" (all 64 bits in practice).
FIXED_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
DISK_TYPE_NONE = 0
DISK_TYPE_FIXED = 2
DISK_TYPE_DYNAMIC = 3
DISK_TYPE_DIFFERENCING = 4
CREATOR_HOST_OS_WINDOWS = b"Wi2k"
CREATOR_HOST_OS_MACINTOSH = b"Mac "
#: Timestamps count seconds since January 1, 2000 12:00:00 AM UTC (spec, "Time Stamp").
VHD_EPOCH = 946684800

# cookie, features, version, data offset, timestamp, creator app, creator version, creator host
# OS, original size, current size, cylinders, heads, sectors/track, disk type, checksum,
# unique id, saved state, reserved (427 bytes).
FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427s")
FOOTER_CHECKSUM_FIELD = (64, 68)
assert FOOTER.size == FOOTER_SIZE

# --- Dynamic Disk Header (spec, "Dynamic Disk Header Format") ---------------------------
HEADER_COOKIE = b"cxsparse"
HEADER_SIZE = 1024
HEADER_VERSION = 0x00010000
#: "Data Offset: currently unused by existing formats and should be set to 0xFFFFFFFF".
HEADER_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
PARENT_LOCATOR_COUNT = 8
PARENT_NAME_SIZE = 512
# cookie, data offset, table offset, header version, max table entries, block size, checksum,
# parent unique id, parent timestamp, reserved, parent unicode name (UTF-16BE), then the eight
# 24-byte locator entries and 256 reserved bytes (kept raw for round-trips).
HEADER = struct.Struct(">8sQQIIII16sII512s192s256s")
HEADER_CHECKSUM_FIELD = (36, 40)
assert HEADER.size == HEADER_SIZE

# --- Parent Locator Entry (spec, "Dynamic Disk Header Format", Parent Locator Entries) -----
PLATFORM_CODE_NONE = b"\0\0\0\0"
PLATFORM_CODE_WI2R = b"Wi2r"  # deprecated: relative path, ASCII
PLATFORM_CODE_WI2K = b"Wi2k"  # deprecated: absolute path, ASCII
PLATFORM_CODE_W2RU = b"W2ru"  # relative Windows path, UTF-16LE
PLATFORM_CODE_W2KU = b"W2ku"  # absolute Windows path, UTF-16LE
PLATFORM_CODE_MAC = b"Mac "  # Mac OS alias blob
PLATFORM_CODE_MACX = b"MacX"  # file URL, UTF-8
LOCATOR = struct.Struct(">4sIIIQ")
assert LOCATOR.size == 24

# --- Block Allocation Table (spec, "Block Allocation Table and Data Blocks") -----------------
BAT_ENTRY_UNUSED = 0xFFFFFFFF
DEFAULT_BLOCK_SIZE = 2 << 20
#: The largest disk the format allows: 2040 GiB (spec, "Current Size"; Hyper-V's limit).
MAX_VIRTUAL_SIZE = 2040 << 30


def _need(data: bytes | bytearray | memoryview, size: int, what: str) -> None:
    if len(data) < size:
        raise ImageError(f"{what}: {len(data)} bytes, need {size} (truncated)")


def vhd_timestamp(unix: float | None = None) -> int:
    """Seconds since 2000-01-01 UTC, clamped to the 32-bit field."""
    if unix is None:
        unix = time.time()
    return max(0, min(0xFFFFFFFF, int(unix) - VHD_EPOCH))


def unix_time(vhd_ts: int) -> int:
    return vhd_ts + VHD_EPOCH


class _Checksummed:
    """Shared by the footer and the dynamic header: their checksum is the ones'
    complement of their bytes with the checksum field zeroed (spec, "Checksum")."""

    checksum: int

    def _pack(self, checksum: int) -> bytes:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The bytes, with the stored (not recomputed) checksum."""
        return self._pack(self.checksum)

    def compute_checksum(self) -> int:
        return vhd_checksum(self._pack(0))

    @property
    def checksum_ok(self) -> bool:
        return self.compute_checksum() == self.checksum

    def with_checksum(self: _C) -> _C:
        return replace(self, checksum=self.compute_checksum())  # type: ignore[type-var]


_C = TypeVar("_C", bound=_Checksummed)


@dataclass(frozen=True)
class Footer(_Checksummed):
    """The 512-byte Hard Disk Footer (the copy at offset 0 of dynamic disks is identical)."""

    cookie: bytes
    features: int
    file_format_version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_host_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors: int
    disk_type: int
    checksum: int
    unique_id: UUID
    saved_state: int
    reserved: bytes = field(default=bytes(427), repr=False)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Footer:
        """Parse 512 bytes (or an old 511-byte footer, padded with a zero byte)."""
        if len(data) == FOOTER_SIZE_OLD:
            data = bytes(data) + b"\0"
        _need(data, FOOTER_SIZE, "footer")
        f = FOOTER.unpack_from(data)
        return cls(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11],
                   f[12], f[13], f[14], UUID(bytes=f[15]), f[16], f[17])

    @classmethod
    def new(cls, *, disk_type: int, size: int, cylinders: int, heads: int, sectors: int,
            unique_id: UUID, timestamp: int, creator_app: bytes = b"vhdm",
            creator_version: int = 0x00010000, creator_host_os: bytes = CREATOR_HOST_OS_WINDOWS,
            data_offset: int = FIXED_DATA_OFFSET) -> Footer:
        """A footer with its checksum filled in."""
        f = cls(FOOTER_COOKIE, FEATURES_RESERVED, FILE_FORMAT_VERSION, data_offset, timestamp,
                creator_app.ljust(4, b" ")[:4], creator_version, creator_host_os, size, size,
                cylinders, heads, sectors, disk_type, 0, unique_id, 0)
        return f.with_checksum()

    def _pack(self, checksum: int) -> bytes:
        return FOOTER.pack(self.cookie, self.features, self.file_format_version,
                           self.data_offset, self.timestamp, self.creator_app,
                           self.creator_version, self.creator_host_os, self.original_size,
                           self.current_size, self.cylinders, self.heads, self.sectors,
                           self.disk_type, checksum, self.unique_id.bytes, self.saved_state,
                           self.reserved)



@dataclass(frozen=True)
class ParentLocator:
    """One of the eight 24-byte Parent Locator Entries of the dynamic header."""

    platform_code: bytes = PLATFORM_CODE_NONE
    #: Space reserved for the locator data; Windows writes bytes, the spec says sectors.
    data_space: int = 0
    data_length: int = 0
    reserved: int = 0
    data_offset: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> ParentLocator:
        _need(data, LOCATOR.size, "parent locator")
        return cls(*LOCATOR.unpack_from(data))

    @classmethod
    def new(cls, platform_code: bytes, data_space: int, data_length: int,
            data_offset: int) -> ParentLocator:
        return cls(platform_code, data_space, data_length, 0, data_offset)

    def serialize(self) -> bytes:
        return LOCATOR.pack(self.platform_code, self.data_space, self.data_length,
                            self.reserved, self.data_offset)

    @property
    def used(self) -> bool:
        return self.platform_code != PLATFORM_CODE_NONE

    def space_bytes(self) -> int:
        """Reserved bytes: the field is in sectors per spec but in bytes from Windows
        (fat-differential.vhd: space 65536 for a 32-byte W2ru); values below the length or
        not a multiple of 512 are read as sectors."""
        if self.data_space >= self.data_length and self.data_space % SECTOR_SIZE == 0:
            return self.data_space
        return self.data_space * SECTOR_SIZE


@dataclass(frozen=True)
class DynamicHeader(_Checksummed):
    """The 1024-byte Dynamic Disk Header (``cxsparse``)."""

    cookie: bytes
    data_offset: int
    table_offset: int
    header_version: int
    max_table_entries: int
    block_size: int
    checksum: int
    parent_unique_id: UUID
    parent_timestamp: int
    reserved1: int
    parent_unicode_name_raw: bytes
    locators: tuple[ParentLocator, ...]
    reserved2: bytes = field(default=bytes(256), repr=False)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> DynamicHeader:
        _need(data, HEADER_SIZE, "dynamic disk header")
        h = HEADER.unpack_from(data)
        locs = tuple(ParentLocator.parse(h[11][i * 24:(i + 1) * 24])
                     for i in range(PARENT_LOCATOR_COUNT))
        return cls(h[0], h[1], h[2], h[3], h[4], h[5], h[6], UUID(bytes=h[7]), h[8], h[9],
                   h[10], locs, h[12])

    @classmethod
    def new(cls, *, table_offset: int, max_table_entries: int, block_size: int,
            parent_unique_id: UUID | None = None, parent_timestamp: int = 0,
            parent_name: str = "", locators: list[ParentLocator] | None = None
            ) -> DynamicHeader:
        """A header with its checksum filled in."""
        locs = list(locators or [])
        locs += [ParentLocator()] * (PARENT_LOCATOR_COUNT - len(locs))
        name = parent_name.encode("utf-16-be")
        if len(name) > PARENT_NAME_SIZE:
            # The field holds 256 UTF-16 code units; keep the end (the file name matters).
            name = name[-PARENT_NAME_SIZE:]
        h = cls(HEADER_COOKIE, HEADER_DATA_OFFSET, table_offset, HEADER_VERSION,
                max_table_entries, block_size, 0, parent_unique_id or UUID(int=0),
                parent_timestamp, 0, name.ljust(PARENT_NAME_SIZE, b"\0"), tuple(locs))
        return h.with_checksum()

    @property
    def parent_unicode_name(self) -> str:
        """The parent's name (UTF-16BE, NUL-padded), undecodable units replaced."""
        raw = self.parent_unicode_name_raw
        # Stop at the first NUL code unit.
        for i in range(0, len(raw) - 1, 2):
            if raw[i] == 0 and raw[i + 1] == 0:
                raw = raw[:i]
                break
        return raw.decode("utf-16-be", errors="replace")

    def _pack(self, checksum: int) -> bytes:
        locs = b"".join(loc.serialize() for loc in self.locators)
        return HEADER.pack(self.cookie, self.data_offset, self.table_offset,
                           self.header_version, self.max_table_entries, self.block_size,
                           checksum, self.parent_unique_id.bytes, self.parent_timestamp,
                           self.reserved1, self.parent_unicode_name_raw, locs, self.reserved2)



@dataclass
class Bat:
    """The Block Allocation Table: big-endian 32-bit sector offsets, 0xFFFFFFFF = unused.

    Held in memory as native ``array('I')`` (4 bytes per entry).
    """

    entries: array = field(default_factory=lambda: array("I"))

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, count: int) -> Bat:
        _need(data, count * 4, "block allocation table")
        a = array("I")
        a.frombytes(bytes(data[:count * 4]))
        if sys.byteorder == "little":
            a.byteswap()
        return cls(a)

    @classmethod
    def new(cls, count: int) -> Bat:
        return cls(array("I", [BAT_ENTRY_UNUSED]) * count)

    def serialize(self) -> bytes:
        return entries_bytes(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def entries_bytes(entries: array) -> bytes:
    """Big-endian bytes of BAT entries (a slice of the table)."""
    a = array("I", entries)
    if sys.byteorder == "little":
        a.byteswap()
    return a.tobytes()


def bitmap_size(block_size: int) -> int:
    """Bytes of a block's sector bitmap: one bit per sector, padded to a whole sector
    (spec, "Block Allocation Table and Data Blocks")."""
    bits = block_size // SECTOR_SIZE
    nbytes = (bits + 7) // 8
    return (nbytes + SECTOR_SIZE - 1) // SECTOR_SIZE * SECTOR_SIZE
