"""Scan a virtual disk: partitions, their file systems, and the bytes each marks free.

Strictly "when in doubt, keep" (issue 13): any error a reader raises keeps its partition
whole with the error as the reason; a damaged partition table keeps the whole disk; bytes
outside partitions are never free.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable

from vhdlib.volume import partitions, signatures
from vhdlib.volume.errors import KEEP_ERRORS, UnsupportedVolumeError
from vhdlib.volume.ext4 import volume as ext4
from vhdlib.volume.fsmap import FsMap
from vhdlib.volume.ntfs import volume as ntfs
from vhdlib.volume.report import PartitionReport, VolumeMap
from vhdlib.volume.source import Readable, Window

log = logging.getLogger(__name__)

#: What a reader's unchecked decode raises on bytes it did not bound first (a short buffer
#: to ``struct.unpack_from``, an index past a value). Each is a missing check, so a bug to
#: fix, but the bytes were damaged all the same: the partition is kept whole (the library
#: boundary translates them, see STYLE.md) and the traceback is logged so it stays visible.
#: The reason carries DAMAGED_STRUCTURE, which the fuzz tests refuse to see.
UNCHECKED_ERRORS = (struct.error, IndexError, ValueError)
DAMAGED_STRUCTURE = "damaged structure"

#: (name, cheap probe, reader) of each file system read; the first probe that accepts wins.
READERS: tuple[tuple[str, Callable[[Window], bool], Callable[[Window], FsMap]], ...] = (
    ("ntfs", ntfs.probe, ntfs.read),
    ("ext", ext4.probe, ext4.read),
)


def _identify(win: Window) -> str:
    """A name for a file system we do not read, for the reason (libblkid's magics)."""
    head = win.read(0, min(win.length, 4096))
    if head[3:11] == b"EXFAT   ":
        return "exFAT"
    if head[0x52:0x57] == b"FAT32" or head[0x36:0x39] == b"FAT":
        return "FAT"
    if head[:4] == b"XFSB":
        return "XFS"
    if head[3:7] == b"ReFS":
        return "ReFS"
    if len(head) >= 4096 and head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "Linux swap"
    if not any(head):
        return "no file system (blank start)"
    return "unknown"


def _read_partition(disk: Readable, part: partitions.Partition) -> PartitionReport:
    base = PartitionReport(part.number, part.scheme, part.start, part.length, part.type,
                           part.name)
    fs_name: str | None = None
    try:
        win = Window(disk, part.start, part.length)
        signatures.check(part, win)
        for name, probe, reader in READERS:
            if probe(win):
                fs_name = name
                fsmap = reader(win)
                break
        else:
            raise UnsupportedVolumeError(f"file system not read: {_identify(win)}")
    except KEEP_ERRORS as e:
        return _replace(base, file_system=fs_name, kept=e.message)
    except UNCHECKED_ERRORS as e:
        what = fs_name or "volume signatures"  # before a probe accepted: the signature checks
        log.error("partition %d: %s: unchecked structure, kept whole", part.number, what,
                  exc_info=True)
        return _replace(base, file_system=fs_name,
                        kept=f"{what}: {DAMAGED_STRUCTURE} ({type(e).__name__}: {e})")
    shifted = tuple((part.start + s, part.start + e) for s, e in fsmap.free)
    return _replace(base, file_system=fsmap.file_system, cluster_size=fsmap.cluster_size,
                    free_ranges=shifted)


def _replace(report: PartitionReport, **changes: object) -> PartitionReport:

    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]


def scan(disk: Readable) -> VolumeMap:
    """The partitions of ``disk`` with their free byte ranges or why each is kept whole.

    Raises only what reading ``disk`` itself raises (e.g. an
    :class:`~vhdlib.errors.ImageError` of a damaged VHD); every problem with the guest's
    partition table or file systems becomes a "kept whole" reason instead.
    """
    sector = int(getattr(disk, "logical_sector_size", 512))
    try:
        table = partitions.read_table(disk, sector)
    except KEEP_ERRORS as e:
        return VolumeMap(disk.virtual_size, "unknown", sector, (),
                         kept=f"partition table: {e.message}")
    reports = tuple(_read_partition(disk, p) for p in table.partitions)
    return VolumeMap(disk.virtual_size, table.scheme, sector, reports, notes=table.notes)
