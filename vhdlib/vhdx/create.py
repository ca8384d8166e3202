"""Creating VHDX files (MS-VHDX v1.0): fixed, dynamic and differencing, laid out as
Hyper-V and qemu do."""

from __future__ import annotations

import array
import os
import sys
from uuid import UUID, uuid4

from vhdlib import fileio
from vhdlib.errors import UsageError
from vhdlib.layer import DiskType, Layer
from vhdlib.vhdx import structs as S
from vhdlib.vhdx.allocation import align_up
from vhdlib.vhdx.layer import GuidFactory, VhdxLayer
from vhdlib.vhdx.locators import relative_windows

MiB = S.MiB


def create(path: str | os.PathLike[str], virtual_size: int, disk_type: DiskType | str, *,
           block_size: int = 32 * MiB, logical_sector_size: int = 512,
           physical_sector_size: int = 4096, parent: Layer | None = None,
           sparse: bool = False, file_write_guid: UUID | None = None,
           data_write_guid: UUID | None = None, virtual_disk_id: UUID | None = None,
           creator: str = "vhdmend", guid_factory: GuidFactory | None = None) -> VhdxLayer:
    """Create a VHDX file and return it opened writable.

    Layout (as Hyper-V and qemu): identifier, headers, region tables in the first MiB; a
    1 MiB log at 1 MiB; 1 MiB metadata at 2 MiB; the BAT at 3 MiB; payload blocks after.
    ``fixed``: every block FULLY_PRESENT, space reserved with ``posix_fallocate`` unless
    ``sparse`` (only metadata is written). ``differencing``: ``parent`` is required; the
    locator holds ``parent_linkage`` (the parent's DataWriteGuid), ``relative_path`` and
    ``absolute_win32_path`` (``Z:`` + the POSIX path, Wine's convention). GUIDs not given
    come from ``guid_factory`` (default random).
    """
    path = os.fspath(path)
    dt = DiskType(disk_type) if isinstance(disk_type, str) else disk_type
    gen = guid_factory or uuid4
    if os.path.lexists(path):
        raise UsageError("target already exists", path=path)
    if logical_sector_size not in (512, 4096) or physical_sector_size not in (512, 4096):
        raise UsageError("sector sizes must be 512 or 4096", path=path)
    if not (S.MIN_BLOCK_SIZE <= block_size <= S.MAX_BLOCK_SIZE
            and block_size & (block_size - 1) == 0):
        raise UsageError(f"block size {block_size} must be a power of two in 1-256 MiB",
                         path=path)
    if dt is DiskType.DIFFERENCING:
        if parent is None:
            raise UsageError("a differencing disk needs a parent", path=path)
        if parent.logical_sector_size != logical_sector_size:
            raise UsageError(f"parent has {parent.logical_sector_size}-byte sectors",
                             path=path)
    elif parent is not None:
        raise UsageError("only differencing disks have a parent", path=path)
    if (not isinstance(virtual_size, int) or virtual_size <= 0
            or virtual_size % logical_sector_size or virtual_size > S.MAX_VIRTUAL_SIZE):
        raise UsageError(f"virtual size {virtual_size} must be a positive multiple of "
                         f"{logical_sector_size} up to 64 TiB", path=path)
    has_parent = dt is DiskType.DIFFERENCING
    fixed = dt is DiskType.FIXED
    log_off, log_len = MiB, MiB
    meta_off, meta_len = 2 * MiB, MiB
    bat_off = 3 * MiB
    count = S.bat_entry_count(virtual_size, block_size, logical_sector_size, has_parent)
    bat_len = align_up(count * 8, MiB)
    data_start = bat_off + bat_len
    data_blocks = -(-virtual_size // block_size)
    ratio = S.chunk_ratio(block_size, logical_sector_size)

    fwg = file_write_guid or gen()
    dwg = data_write_guid or gen()
    vdid = virtual_disk_id or gen()

    # Metadata items (2.6.2), each at a 64 KiB-aligned... the spec only asks for >= 64 KiB;
    # we pack them after the table like Hyper-V.
    items: list[tuple[UUID, bytes, bool]] = [
        (S.FILE_PARAMETERS_GUID, S.FileParameters.new(block_size, fixed, has_parent)
         .serialize(), False),
        (S.VIRTUAL_DISK_SIZE_GUID, S.serialize_u64(virtual_size), True),
        (S.PAGE83_DATA_GUID, vdid.bytes_le, True),
        (S.LOGICAL_SECTOR_SIZE_GUID, S.serialize_u32(logical_sector_size), True),
        (S.PHYSICAL_SECTOR_SIZE_GUID, S.serialize_u32(physical_sector_size), True),
    ]
    if has_parent:
        assert parent is not None
        folder = os.path.dirname(os.path.abspath(path))
        ppath = os.path.abspath(parent.path)
        loc = S.ParentLocator.new([
            ("parent_linkage", "{" + str(parent.link_id) + "}"),
            ("relative_path", relative_windows(ppath, folder)),
            ("absolute_win32_path", "Z:" + ppath.replace("/", "\\")),
        ])
        items.append((S.PARENT_LOCATOR_GUID, loc.serialize(), False))
    meta = bytearray(meta_len)
    entries = []
    pos = S.METADATA_TABLE_SIZE
    for g, data, is_vd in items:
        meta[pos:pos + len(data)] = data
        entries.append(S.MetadataEntry(g, pos, len(data), False, is_vd, True))
        pos += align_up(len(data), 8)
    meta[0:S.METADATA_TABLE_SIZE] = S.MetadataTable.new(entries).serialize()

    bat = array.array("Q", bytes(count * 8))
    if fixed:
        for i in range(data_blocks):
            bat[i + i // ratio] = S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT,
                                              data_start + i * block_size)
    file_size = data_start + (data_blocks * block_size if fixed else 0)

    regions = S.RegionTable.new([S.RegionEntry(S.BAT_REGION_GUID, bat_off, bat_len, True),
                                 S.RegionEntry(S.METADATA_REGION_GUID, meta_off, meta_len,
                                               True)]).serialize()
    h1 = S.Header.new(0, fwg, dwg, log_off, log_len).serialize()
    h2 = S.Header.new(1, fwg, dwg, log_off, log_len).serialize()
    with fileio.new_image(path, needed=file_size) as fd:
        os.ftruncate(fd, file_size)
        if fixed and not sparse:
            fileio.allocate(fd, data_start, file_size - data_start)
        fileio.pwrite(fd, S.FileIdentifier.new(creator).serialize(), 0)
        fileio.pwrite(fd, h1, S.HEADER1_OFFSET)
        fileio.pwrite(fd, h2, S.HEADER2_OFFSET)
        fileio.pwrite(fd, regions, S.REGION_TABLE1_OFFSET)
        fileio.pwrite(fd, regions, S.REGION_TABLE2_OFFSET)
        fileio.pwrite(fd, bytes(meta), meta_off)
        raw = bat.tobytes()
        if sys.byteorder == "big":  # pragma: no cover
            b2 = array.array("Q", bat)
            b2.byteswap()
            raw = b2.tobytes()
        fileio.pwrite(fd, raw, bat_off)
        os.fsync(fd)
        return VhdxLayer(path, fd, writable=True, guid_factory=guid_factory)
