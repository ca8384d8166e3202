"""The ``$LogFile`` restart pages (ntfs-3g ``logfile.h``: RESTART_PAGE_HEADER and
RESTART_AREA; libfsntfs "Metadata files: $LogFile"). A volume whose log still has clients
in use without the "clean" flag has transactions Windows would replay at mount.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from vhdlib.volume.errors import VolumeStateRefusal, VolumeStructureError
from vhdlib.volume.ntfs.record import apply_fixups

RESTART_VOLUME_IS_CLEAN = 0x0002  # RESTART_AREA.flags
LOGFILE_NO_CLIENT = 0xFFFF
MIN_PAGE = 512  # the smallest restart page (system page size) page_size accepts
_PAGE_SIZE_AT = 0x10  # RESTART_PAGE_HEADER.system_page_size


@dataclass(frozen=True)
class RestartArea:
    """The fields of one restart page that say whether the log is clean."""

    current_lsn: int
    client_in_use_list: int
    flags: int

    @classmethod
    def parse(cls, page: bytes) -> RestartArea:
        """Decode a restart page of exactly its system page size."""
        if page[:4] == b"CHKD":
            raise VolumeStateRefusal("NTFS $LogFile marked by an unfinished chkdsk")
        data = apply_fixups(page, b"RSTR", "$LogFile restart page")
        (ra_ofs,) = struct.unpack_from("<H", data, 0x18)
        if ra_ofs + 0x10 > len(data) or ra_ofs & 7:
            raise VolumeStructureError(f"$LogFile restart area at {ra_ofs}")
        lsn, _clients, _free, in_use, flags = struct.unpack_from("<QHHHH", data, ra_ofs)
        return cls(lsn, in_use, flags)

    @property
    def clean(self) -> bool:
        # ntfs-3g ntfs_is_logfile_clean: clients in use and no clean flag -> replay needed.
        return self.client_in_use_list == LOGFILE_NO_CLIENT or bool(
            self.flags & RESTART_VOLUME_IS_CLEAN)


def page_size(head: bytes) -> int:
    """The restart page size the first header names (a power of two, 512..64 KiB)."""
    if head[:4] not in (b"RSTR", b"CHKD"):
        raise VolumeStructureError("$LogFile has no restart page")
    if len(head) < _PAGE_SIZE_AT + 4:
        raise VolumeStructureError(f"$LogFile restart page header cut at {len(head)} bytes")
    (size,) = struct.unpack_from("<I", head, _PAGE_SIZE_AT)
    if size < MIN_PAGE or size > 65536 or size & (size - 1):
        raise VolumeStructureError(f"$LogFile system page size {size}")
    return size


def check_clean(read: Callable[[int, int], bytes], length: int) -> None:
    """Refuse unless the log is empty (all 0xFF, as mkntfs and ntfs-3g leave it) or its most
    recent restart area is clean. ``read(offset, size)`` reads the $LogFile's data."""
    # ntfs-3g ntfs_check_logfile: a log too small for its two restart pages is damaged
    # (checked before any header is decoded; the smallest pages bound it from below).
    if length < 2 * MIN_PAGE:
        raise VolumeStructureError(f"$LogFile of {length} bytes is smaller than its two "
                                   "restart pages")
    head = read(0, min(length, 4096))
    if head.count(0xFF) == len(head):
        return
    size = page_size(head)
    if 2 * size > length:
        raise VolumeStructureError("$LogFile smaller than its two restart pages")
    areas = []
    for n in range(2):
        page = read(n * size, size)
        if page[:4] in (b"RSTR", b"CHKD"):
            areas.append(RestartArea.parse(page))
    if not areas:
        raise VolumeStructureError("$LogFile has no valid restart page")
    newest = max(areas, key=lambda a: a.current_lsn)
    if not newest.clean:
        raise VolumeStateRefusal("NTFS $LogFile not clean: Windows would replay it")
