"""GUID Partition Table header and entries (structures only).

UEFI Specification 2.10, section 5.3 "GUID Partition Table (GPT) Disk Layout": header
table 5-5, entry table 5-6, validity rules in 5.3.2.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from vhdlib.volume.errors import VolumeChecksumError, VolumeStructureError

SIGNATURE = b"EFI PART"
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
MIN_HEADER_SIZE = 92  # UEFI 2.10 table 5-5: HeaderSize >= 92
MAX_ENTRIES = 16384  # bound the read; real tables hold 128


@dataclass(frozen=True)
class GptHeader:
    """The GPT header (UEFI 2.10 table 5-5)."""

    revision: int
    header_size: int
    header_crc32: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: uuid.UUID
    partition_entry_lba: int
    number_of_entries: int
    entry_size: int
    entries_crc32: int

    @classmethod
    def parse(cls, sector: bytes, lba: int) -> GptHeader:
        """Parse and check the header read from ``lba`` (UEFI 2.10 section 5.3.2)."""
        if len(sector) < MIN_HEADER_SIZE or sector[:8] != SIGNATURE:
            raise VolumeStructureError(f"no GPT header signature at LBA {lba}")
        (_sig, rev, hsize, hcrc, _res, my_lba, alt, first, last, guid, entry_lba, count,
         esize, ecrc) = _HEADER.unpack_from(sector)
        if not MIN_HEADER_SIZE <= hsize <= len(sector):
            raise VolumeStructureError(f"GPT header at LBA {lba}: header size {hsize}")
        # 5.3.2: the CRC covers HeaderSize bytes with the CRC field itself zeroed.
        body = sector[:16] + b"\0\0\0\0" + sector[20:hsize]
        if zlib.crc32(body) != hcrc:
            raise VolumeChecksumError(f"GPT header at LBA {lba}: header CRC-32 mismatch")
        if my_lba != lba:
            raise VolumeStructureError(f"GPT header at LBA {lba} names MyLBA {my_lba}")
        # 5.3.2 / table 5-5: SizeOfPartitionEntry is 128 x 2^n.
        if esize < 128 or esize & (esize - 1) or not 0 < count <= MAX_ENTRIES:
            raise VolumeStructureError(
                f"GPT header at LBA {lba}: {count} entries of {esize} bytes")
        if first > last:
            raise VolumeStructureError(f"GPT header at LBA {lba}: first usable > last usable")
        return cls(rev, hsize, hcrc, my_lba, alt, first, last, uuid.UUID(bytes_le=guid),
                   entry_lba, count, esize, ecrc)

    @property
    def entries_bytes(self) -> int:
        return self.number_of_entries * self.entry_size


@dataclass(frozen=True)
class GptEntry:
    """One partition entry (UEFI 2.10 table 5-6)."""

    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    starting_lba: int
    ending_lba: int  # inclusive
    attributes: int
    name: str

    @classmethod
    def parse(cls, raw: bytes) -> GptEntry:
        tguid, uguid, first, last, attrs, name = _ENTRY.unpack_from(raw)
        text = name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        return cls(uuid.UUID(bytes_le=tguid), uuid.UUID(bytes_le=uguid), first, last, attrs,
                   text)

    @property
    def empty(self) -> bool:
        """Type GUID zero marks an unused entry (UEFI 2.10 table 5-7)."""
        return self.type_guid.int == 0


def parse_entries(header: GptHeader, table: bytes) -> list[tuple[int, GptEntry]]:
    """Check the entry array's CRC-32 (5.3.2) and return ``(index, entry)`` of used ones."""
    if zlib.crc32(table[:header.entries_bytes]) != header.entries_crc32:
        raise VolumeChecksumError(
            f"GPT partition entry array at LBA {header.partition_entry_lba}: CRC-32 mismatch")
    out = []
    for i in range(header.number_of_entries):
        entry = GptEntry.parse(table[i * header.entry_size:(i + 1) * header.entry_size])
        if not entry.empty:
            out.append((i, entry))
    return out
