"""Master Boot Record and extended boot records (structures only).

Layout: UEFI Specification 2.10, section 5.2.1 "Legacy Master Boot Record" (table 5-1,
partition record table 5-2); extended partitions chain EBRs whose first entry is the logical
partition relative to that EBR and whose second points to the next EBR relative to the
extended partition's start (the EBR convention of MS-DOS, as documented by util-linux fdisk).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vhdlib.volume.errors import VolumeStructureError

SIGNATURE = b"\x55\xaa"  # UEFI 2.10 table 5-1, offset 510
ENTRY_OFFSET = 0x1BE  # four 16-byte partition records
TYPE_EMPTY = 0x00
TYPE_GPT_PROTECTIVE = 0xEE  # UEFI 2.10 section 5.2.3
EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})

_ENTRY = struct.Struct("<B3sB3sII")


@dataclass(frozen=True)
class MbrEntry:
    """One 16-byte partition record (UEFI 2.10 table 5-2)."""

    boot_indicator: int
    os_type: int
    starting_lba: int
    size_in_lba: int

    @classmethod
    def parse(cls, raw: bytes) -> MbrEntry:
        boot, _chs1, os_type, _chs2, start, size = _ENTRY.unpack(raw)
        return cls(boot, os_type, start, size)

    @property
    def empty(self) -> bool:
        return self.os_type == TYPE_EMPTY or self.size_in_lba == 0

    @property
    def extended(self) -> bool:
        return self.os_type in EXTENDED_TYPES


@dataclass(frozen=True)
class Mbr:
    """A sector holding a partition table: the MBR or an EBR."""

    entries: tuple[MbrEntry, MbrEntry, MbrEntry, MbrEntry]

    @classmethod
    def parse(cls, sector: bytes) -> Mbr:
        """Parse a 512-byte (or larger) sector; no 0x55AA signature is a structure error."""
        if len(sector) < 512 or sector[510:512] != SIGNATURE:
            raise VolumeStructureError("no 0x55AA boot signature")
        raw = [sector[ENTRY_OFFSET + 16 * i:ENTRY_OFFSET + 16 * (i + 1)] for i in range(4)]
        e = tuple(MbrEntry.parse(r) for r in raw)
        for entry in e:
            # UEFI 2.10 table 5-2: BootIndicator is 0x00 or 0x80; anything else is not a
            # partition table (an NTFS or FAT boot sector carries code here).
            if entry.boot_indicator not in (0x00, 0x80) and not entry.empty:
                raise VolumeStructureError(
                    f"partition record boot indicator 0x{entry.boot_indicator:02x} is "
                    "neither 0x00 nor 0x80")
        return cls((e[0], e[1], e[2], e[3]))

    @property
    def used(self) -> list[tuple[int, MbrEntry]]:
        """``(slot, entry)`` of each non-empty record."""
        return [(i, entry) for i, entry in enumerate(self.entries) if not entry.empty]

    @property
    def protective(self) -> bool:
        """A GPT protective MBR: a record of type 0xEE (UEFI 2.10 section 5.2.3)."""
        return any(entry.os_type == TYPE_GPT_PROTECTIVE for _, entry in self.used)
