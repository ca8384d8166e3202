"""Find the partitions of a virtual disk: GPT (both headers checked), MBR with extended and
logical partitions, or one file system starting at sector 0.

Rules from UEFI Specification 2.10: section 5.2 (legacy and protective MBR) and 5.3.2 (GPT
validity: signature, header CRC-32, MyLBA, entry-array CRC-32; the backup header at the last
LBA is used when the primary is damaged). The table's own sectors (MBR, every EBR, both GPT
headers and entry arrays) lie outside every partition, so they are always kept. Any
inconsistency, including a partition or usable range that covers one of those sectors or
two valid GPT headers that disagree, raises :class:`VolumeStructureError`, and the scan then
keeps the whole disk.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from vhdlib.volume import gpt, mbr
from vhdlib.volume.errors import VolumeStructureError
from vhdlib.volume.source import Readable

MAX_LOGICAL = 128  # bound the EBR chain (a loop or a corrupt chain must not hang)
#: Sectors the table itself occupies: (first LBA, count, what they hold).
TableSectors = list[tuple[int, int, str]]
#: Offsets that mark a file system starting at sector 0 (no partition table).
_NTFS_OEM = (3, b"NTFS    ")


@dataclass(frozen=True)
class Partition:
    """One partition, in bytes of the virtual disk."""

    number: int  # as Linux numbers them: GPT entry + 1; MBR 1-4 primary, 5.. logical
    scheme: str  # "gpt", "mbr" or "none" (a file system at sector 0)
    start: int
    length: int
    type: str  # GPT type GUID, or "0x07"-style MBR type; "" for "none"
    name: str = ""

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class PartitionTable:
    """The partitions found and notes on how (e.g. the backup GPT header was used)."""

    scheme: str
    sector_size: int
    partitions: tuple[Partition, ...]
    notes: tuple[str, ...] = field(default=())


def read_table(disk: Readable, sector_size: int = 512) -> PartitionTable:
    """The partition table of ``disk``; raises :class:`VolumeStructureError` when it is
    damaged beyond the backup's help or inconsistent (overlaps, outside the disk)."""
    if disk.virtual_size < sector_size:
        raise VolumeStructureError("disk smaller than one sector")
    head = disk.read(0, min(disk.virtual_size, 4096))
    whole = (Partition(1, "none", 0, disk.virtual_size, ""),)
    if head[_NTFS_OEM[0]:_NTFS_OEM[0] + 8] == _NTFS_OEM[1]:
        return PartitionTable("none", sector_size, whole)
    try:
        table = mbr.Mbr.parse(head[:512])
    except VolumeStructureError:
        return PartitionTable("none", sector_size, whole)
    if table.protective:
        return _read_gpt(disk, sector_size)
    if not table.used:
        return PartitionTable("none", sector_size, whole)
    return _read_mbr(disk, table, sector_size)


# --- GPT ------------------------------------------------------------------------------


def _load_gpt(disk: Readable, lba: int, ss: int) -> tuple[gpt.GptHeader, list]:
    header = gpt.GptHeader.parse(disk.read(lba * ss, ss), lba)
    total = disk.virtual_size // ss
    table_end = header.partition_entry_lba * ss + header.entries_bytes
    if header.partition_entry_lba < 1 or table_end > disk.virtual_size:
        raise VolumeStructureError(f"GPT header at LBA {lba}: entry array outside the disk")
    if header.last_usable_lba >= total or header.alternate_lba >= total:
        raise VolumeStructureError(f"GPT header at LBA {lba}: usable area beyond the disk")
    raw = disk.read(header.partition_entry_lba * ss, header.entries_bytes)
    return header, gpt.parse_entries(header, raw)


def _read_gpt(disk: Readable, ss: int) -> PartitionTable:
    last_lba = disk.virtual_size // ss - 1
    notes: list[str] = []
    valid: list[tuple[str, gpt.GptHeader]] = []  # (role, header) of each header that checks
    try:
        header, entries = _load_gpt(disk, 1, ss)
        valid.append(("primary", header))
        try:
            valid.append(("backup", _load_gpt(disk, header.alternate_lba, ss)[0]))
        except VolumeStructureError as e:
            notes.append(f"backup GPT damaged: {e.message}")
    except VolumeStructureError as primary_error:
        # UEFI 2.10 5.3.2: "If the primary GPT is corrupt, software must check the last LBA
        # of the device to see if it has a valid GPT Header".
        try:
            header, entries = _load_gpt(disk, last_lba, ss)
        except VolumeStructureError as e:
            raise VolumeStructureError(
                f"GPT: primary ({primary_error.message}) and backup ({e.message}) both "
                "damaged") from e
        valid.append(("backup", header))
        notes.append(f"primary GPT damaged ({primary_error.message}): backup used")
    if len(valid) == 2:
        _check_agree(valid[0][1], valid[1][1])
    sectors = _gpt_sectors(valid, ss)
    for role, h in valid:
        # UEFI 2.10 5.3.2: the primary entry array lies after the primary header and ends
        # before FirstUsableLBA; the backup array lies after LastUsableLBA and ends before
        # the backup header. So no usable LBA may hold a header or an entry array.
        for first, count, what in sectors:
            if first <= h.last_usable_lba and h.first_usable_lba < first + count:
                raise VolumeStructureError(
                    f"{role} GPT header: usable LBAs {h.first_usable_lba}.."
                    f"{h.last_usable_lba} cover the {what} at LBA {first}")
    parts = []
    for index, entry in entries:
        # UEFI 2.10 5.3.3: every partition lies within FirstUsableLBA..LastUsableLBA (and so,
        # by the check above, clear of the table's own sectors).
        if not (header.first_usable_lba <= entry.starting_lba <= entry.ending_lba
                <= header.last_usable_lba):
            raise VolumeStructureError(
                f"GPT entry {index + 1}: LBA {entry.starting_lba}..{entry.ending_lba} outside "
                f"the usable area {header.first_usable_lba}..{header.last_usable_lba}")
        parts.append(Partition(index + 1, "gpt", entry.starting_lba * ss,
                               (entry.ending_lba - entry.starting_lba + 1) * ss,
                               str(entry.type_guid), entry.name))
    _check_disjoint(parts)
    return PartitionTable("gpt", ss, tuple(parts), tuple(notes))


#: Fields the backup header copies from the primary (UEFI 2.10 5.3.2; the fields Linux
#: block/partitions/efi.c compare_gpts() compares).
_COPIED_FIELDS = (("first usable LBA", "first_usable_lba"), ("last usable LBA", "last_usable_lba"),
                  ("disk GUID", "disk_guid"), ("entry count", "number_of_entries"),
                  ("entry size", "entry_size"), ("entry array CRC-32", "entries_crc32"))


def _check_agree(primary: gpt.GptHeader, backup: gpt.GptHeader) -> None:
    """Two valid headers that disagree leave no way to tell which one the guest uses."""
    for label, name in _COPIED_FIELDS:
        a, b = getattr(primary, name), getattr(backup, name)
        if a != b:
            raise VolumeStructureError(
                f"primary (LBA {primary.my_lba}) and backup (LBA {backup.my_lba}) GPT headers "
                f"disagree on the {label}: {a} and {b}")


def _gpt_sectors(valid: list[tuple[str, gpt.GptHeader]], ss: int) -> TableSectors:
    """The protective MBR, each valid header, its entry array, and the other header's LBA
    (UEFI 2.10 5.3.1: AlternateLBA), sorted by LBA."""
    out: TableSectors = [(0, 1, "protective MBR")]
    for role, h in valid:
        other = "backup" if role == "primary" else "primary"
        out += [(h.my_lba, 1, f"{role} GPT header"),
                (h.partition_entry_lba, -(-h.entries_bytes // ss), f"{role} GPT entry array"),
                (h.alternate_lba, 1, f"{other} GPT header")]
    return sorted(out)


# --- MBR ------------------------------------------------------------------------------


def _read_mbr(disk: Readable, table: mbr.Mbr, ss: int) -> PartitionTable:
    total = disk.virtual_size // ss
    parts: list[Partition] = []
    extended = [(slot, e) for slot, e in table.used if e.extended]
    if len(extended) > 1:
        raise VolumeStructureError("MBR holds more than one extended partition")
    for slot, entry in table.used:
        if entry.starting_lba == 0 or entry.starting_lba + entry.size_in_lba > total:
            raise VolumeStructureError(
                f"MBR partition {slot + 1}: sectors {entry.starting_lba}+{entry.size_in_lba} "
                f"outside the disk ({total} sectors)")
        if not entry.extended:
            parts.append(Partition(slot + 1, "mbr", entry.starting_lba * ss,
                                   entry.size_in_lba * ss, f"0x{entry.os_type:02x}"))
    sectors: TableSectors = [(0, 1, "MBR")]
    if extended:
        logicals, ebrs = _logicals(disk, extended[0][1], ss)
        parts.extend(logicals)
        sectors += [(lba, 1, "EBR") for lba in ebrs]
    _check_disjoint(parts)
    _check_clear(parts, sectors, ss)
    return PartitionTable("mbr", ss, tuple(parts))


def _logicals(disk: Readable, ext: mbr.MbrEntry,
              ss: int) -> tuple[list[Partition], list[int]]:
    """Follow the EBR chain of the extended partition ``ext``: the logical partitions and
    the LBA of each EBR."""
    ext_start, ext_end = ext.starting_lba, ext.starting_lba + ext.size_in_lba
    out: list[Partition] = []
    ebr_lba = ext_start
    seen: set[int] = set()
    while True:
        if ebr_lba in seen or len(out) >= MAX_LOGICAL:
            raise VolumeStructureError(f"EBR chain loops or exceeds {MAX_LOGICAL} partitions")
        seen.add(ebr_lba)
        ebr = mbr.Mbr.parse(disk.read(ebr_lba * ss, 512))
        logical, link = ebr.entries[0], ebr.entries[1]
        if not logical.empty:
            start = ebr_lba + logical.starting_lba
            if logical.starting_lba == 0 or start + logical.size_in_lba > ext_end:
                raise VolumeStructureError(
                    f"logical partition {5 + len(out)} outside its extended partition")
            out.append(Partition(5 + len(out), "mbr", start * ss, logical.size_in_lba * ss,
                                 f"0x{logical.os_type:02x}"))
        if link.empty:
            return out, sorted(seen)
        ebr_lba = ext_start + link.starting_lba
        if not ext_start < ebr_lba < ext_end:
            raise VolumeStructureError("EBR link points outside the extended partition")


def _check_disjoint(parts: list[Partition]) -> None:
    ordered = sorted(parts, key=lambda p: p.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.end:
            raise VolumeStructureError(f"partitions {a.number} and {b.number} overlap")


def _check_clear(parts: list[Partition], sectors: TableSectors, ss: int) -> None:
    """No partition may hold a sector of the table itself: the file system there would own
    it, and reclaiming its free space could drop the table (an EBR in a logical's free
    space)."""
    for first, count, what in sectors:
        for p in parts:
            if p.start < (first + count) * ss and first * ss < p.end:
                raise VolumeStructureError(
                    f"partition {p.number} (bytes {p.start}..{p.end}) covers the {what} at "
                    f"LBA {first}")
