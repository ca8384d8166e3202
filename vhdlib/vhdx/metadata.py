"""The VHDX metadata region (MS-VHDX 2.6): the table and the system items we use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from vhdlib.errors import ImageError, UnsupportedError
from vhdlib.vhdx import structs as S

#: Bytes of metadata region we are willing to read (the spec's is 1 MiB in practice).
MAX_METADATA_REGION = 256 * S.MiB
_KNOWN = {S.FILE_PARAMETERS_GUID, S.VIRTUAL_DISK_SIZE_GUID, S.PAGE83_DATA_GUID,
          S.LOGICAL_SECTOR_SIZE_GUID, S.PHYSICAL_SECTOR_SIZE_GUID, S.PARENT_LOCATOR_GUID}


@dataclass
class DiskMetadata:
    """The system metadata items of one VHDX, each validated."""

    table: S.MetadataTable
    file_parameters: S.FileParameters
    virtual_size: int
    logical_sector_size: int
    physical_sector_size: int
    virtual_disk_id: UUID
    parent_locator: S.ParentLocator | None


def read_metadata(read: Callable[[int, int], bytes], region: S.RegionEntry, *,
                  path: str) -> DiskMetadata:
    """2.6: the metadata table and the system items, each bounds-checked."""
    if region.length > MAX_METADATA_REGION or region.length < S.METADATA_TABLE_SIZE:
        raise ImageError(f"metadata region of {region.length} bytes", path=path)
    table = S.MetadataTable.parse(read(region.file_offset, S.METADATA_TABLE_SIZE))
    items: dict[UUID, bytes] = {}
    for e in table.entries:
        # 2.6.1.2: items lie after the 64 KiB table and inside the region.
        if e.length and (e.offset < S.METADATA_TABLE_SIZE
                         or e.offset + e.length > region.length):
            raise ImageError(f"metadata item {e.item_id} [{e.offset}, +{e.length}) lies "
                             "outside the metadata region (MS-VHDX 2.6.1.2)", path=path)
        if e.is_user:
            continue
        if e.item_id not in _KNOWN:
            if e.is_required:
                raise UnsupportedError(f"unknown required metadata item {e.item_id}",
                                       path=path)
            continue
        items[e.item_id] = read(region.file_offset + e.offset, e.length)

    def need(g: UUID, n: int, name: str) -> bytes:
        data = items.get(g)
        if data is None or len(data) < n:
            raise ImageError(f"metadata item {name} missing or too short", path=path)
        return data

    fp = S.FileParameters.parse(need(S.FILE_PARAMETERS_GUID, 8, "file parameters"))
    # 2.6.2.1: block size is a power of two between 1 MiB and 256 MiB.
    if not (S.MIN_BLOCK_SIZE <= fp.block_size <= S.MAX_BLOCK_SIZE
            and fp.block_size & (fp.block_size - 1) == 0):
        raise ImageError(f"block size {fp.block_size} is not a power of two in "
                         "1-256 MiB (MS-VHDX 2.6.2.1)", path=path)
    virtual_size = S.parse_u64(need(S.VIRTUAL_DISK_SIZE_GUID, 8, "virtual disk size"))
    lss = S.parse_u32(need(S.LOGICAL_SECTOR_SIZE_GUID, 4, "logical sector size"))
    pss = S.parse_u32(need(S.PHYSICAL_SECTOR_SIZE_GUID, 4, "physical sector size"))
    if lss not in (512, 4096) or pss not in (512, 4096):
        raise ImageError(f"sector sizes {lss}/{pss} (MS-VHDX 2.6.2.4-5 allow 512, 4096)",
                         path=path)
    # 2.6.2.2: a multiple of the logical sector size, at most 64 TiB.
    if virtual_size == 0 or virtual_size % lss or virtual_size > S.MAX_VIRTUAL_SIZE:
        raise ImageError(f"virtual disk size {virtual_size} is invalid (MS-VHDX 2.6.2.2)",
                         path=path)
    p83 = items.get(S.PAGE83_DATA_GUID)
    vdid = S.guid(p83[:16]) if p83 and len(p83) >= 16 else S.ZERO_GUID
    locator: S.ParentLocator | None = None
    if fp.has_parent:
        raw = items.get(S.PARENT_LOCATOR_GUID)
        if raw is None:
            raise ImageError("differencing VHDX without a parent locator", path=path)
        try:
            locator = S.ParentLocator.parse(raw)
        except UnicodeDecodeError as e:
            raise ImageError(f"parent locator is not UTF-16: {e}", path=path) from e
    return DiskMetadata(table, fp, virtual_size, lss, pss, vdid, locator)
