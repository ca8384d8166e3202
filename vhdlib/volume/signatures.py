"""Partitions kept whole because a volume manager, RAID or encryption owns their bytes:
the file system inside (if any) does not describe how the partition's blocks are used.

Partition types: UEFI 2.10 table 5-7 and the GUIDs the owners publish (Microsoft
"PARTITION_INFORMATION_GPT" for LDM and Storage Spaces; util-linux libblkid's type table for
LVM and Linux RAID). On-disk signatures: LVM2 label "LABELONE" in one of the first four
sectors (lvm2 lib/label/label.c); MD RAID superblock magic 0xa92b4efc (mdadm md_p.h,
md_u.h: versions 0.90, 1.0, 1.1, 1.2 place it at the end, end, start and start + 4 KiB).
"""

from __future__ import annotations

import struct
import uuid

from vhdlib.volume.errors import VolumeStateRefusal
from vhdlib.volume.partitions import Partition
from vhdlib.volume.source import Window

_GPT_OWNERS = {
    uuid.UUID("e6d6d379-f507-44c2-a23c-238f2a3df928"): "LVM physical volume",
    uuid.UUID("5808c8aa-7e8f-42e0-85d2-e1e90434cfb3"): "Windows dynamic disk (LDM metadata)",
    uuid.UUID("af9b60a0-1431-4f62-bc68-3311714a69ad"): "Windows dynamic disk (LDM data)",
    uuid.UUID("e75caf8f-f680-4cee-afa3-b001e56efc2d"): "Windows Storage Spaces",
    uuid.UUID("a19d880f-05fc-4d3b-a006-743f0f84911e"): "Linux MD RAID member",
}
_MBR_OWNERS = {
    0x8E: "LVM physical volume",
    0x42: "Windows dynamic disk (LDM)",
    0xFD: "Linux MD RAID member",
}
MD_MAGIC = struct.pack("<I", 0xA92B4EFC)
LVM_LABEL = b"LABELONE"


def by_type(part: Partition) -> str | None:
    """The owner a partition's type names, or None."""
    if part.scheme == "gpt":
        return _GPT_OWNERS.get(uuid.UUID(part.type))
    if part.scheme == "mbr":
        return _MBR_OWNERS.get(int(part.type, 16))
    return None


def _md_offsets(length: int) -> list[int]:
    sectors = length // 512
    out = [0, 4096]  # 1.1, 1.2
    if sectors >= 16:
        out.append(((sectors - 16) & ~7) * 512)  # 1.0: 8 KiB from the end, 4 KiB aligned
    if length >= 128 * 1024:
        out.append((length & ~0xFFFF) - 0x10000)  # 0.90: last 64 KiB-aligned 64 KiB
    return [o for o in out if 0 <= o <= length - 4]


def by_content(win: Window) -> str | None:
    """The owner whose signature the partition's bytes carry, or None."""
    head = win.read(0, min(win.length, 4 * 512))
    for sector in range(len(head) // 512):
        at = sector * 512
        if head[at:at + 8] == LVM_LABEL and head[at + 24:at + 32] == b"LVM2 001":
            return "LVM physical volume"
    for offset in _md_offsets(win.length):
        if win.read(offset, 4) == MD_MAGIC:
            return "Linux MD RAID member"
    return None


def check(part: Partition, win: Window) -> None:
    """Refuse a partition owned by a volume manager, RAID or Storage Spaces."""
    owner = by_type(part) or by_content(win)
    if owner:
        raise VolumeStateRefusal(f"{owner}: its file systems are not laid out in the partition")
