"""Creating VHDs: fixed, dynamic and differencing, laid out as Hyper-V does
(see :mod:`vhdlib.vhd.layout`)."""

from __future__ import annotations

import os
import uuid as uuid_mod
from uuid import UUID

from vhdlib import fileio
from vhdlib.errors import UsageError
from vhdlib.geometry import chs_for_size
from vhdlib.layer import DiskType, Layer
from vhdlib.vhd.layer import TYPES, VhdLayer
from vhdlib.vhd.layout import (
    DATA_ALIGNMENT,
    MAX_BLOCK_SIZE,
    align_up,
    slot_position,
    valid_block_size,
)
from vhdlib.vhd.locators import relative_locator, utf16le
from vhdlib.vhd.structs import (
    DEFAULT_BLOCK_SIZE,
    DISK_TYPE_FIXED,
    FIXED_DATA_OFFSET,
    FOOTER_SIZE,
    HEADER_SIZE,
    MAX_VIRTUAL_SIZE,
    PLATFORM_CODE_W2KU,
    PLATFORM_CODE_W2RU,
    SECTOR_SIZE,
    DynamicHeader,
    Footer,
    ParentLocator,
    vhd_timestamp,
)

_TYPE_CODES = {v: k for k, v in TYPES.items()}


def create(path: str | os.PathLike[str], virtual_size: int | None,
           disk_type: DiskType | str, *, block_size: int = DEFAULT_BLOCK_SIZE,
           parent: Layer | None = None, parent_path: str | None = None, sparse: bool = False,
           uuid: UUID | None = None, timestamp: int | None = None,
           creator_app: bytes = b"vhdm") -> VhdLayer:
    """Create a VHD and return it opened writable.

    ``timestamp`` is a VHD timestamp (seconds since 2000-01-01 UTC, see
    :func:`vhd_timestamp`); ``uuid`` and ``timestamp`` default to random / now and are
    parameters so resumed operations produce bit-identical files. Differencing disks need
    ``parent`` (an open VHD layer; ``virtual_size`` may be ``None`` to take the parent's);
    ``parent_path`` is the path recorded in the locators (default ``parent.path``).
    Fixed disks are fully allocated with ``posix_fallocate`` unless ``sparse``.
    """
    path = os.fspath(path)
    try:
        dtype = DiskType(disk_type)
    except ValueError as e:
        raise UsageError(f"unknown disk type {disk_type!r}", path=path) from e
    if os.path.lexists(path):
        raise UsageError("target already exists", path=path)
    if dtype is DiskType.DIFFERENCING:
        if parent is None:
            raise UsageError("a differencing disk needs a parent", path=path)
        if parent.format != "vhd":
            raise UsageError(f"a VHD's parent must be a VHD, not {parent.format}", path=path)
        if virtual_size is None:
            virtual_size = parent.virtual_size
        if virtual_size != parent.virtual_size:
            raise UsageError(f"size {virtual_size} differs from the parent's "
                             f"{parent.virtual_size}", path=path)
    elif parent is not None:
        raise UsageError(f"a {dtype.value} disk has no parent", path=path)
    if virtual_size is None or virtual_size <= 0 or virtual_size % SECTOR_SIZE:
        raise UsageError(f"size {virtual_size} is not a positive multiple of {SECTOR_SIZE}",
                         path=path)
    if virtual_size > MAX_VIRTUAL_SIZE:
        raise UsageError(f"size {virtual_size} exceeds the VHD limit of 2040 GiB "
                         f"({MAX_VIRTUAL_SIZE} bytes); use VHDX", path=path)
    if not valid_block_size(block_size):
        raise UsageError(f"block size {block_size} is not a power of two in [512, "
                         f"{MAX_BLOCK_SIZE}]", path=path)
    uid = uuid if uuid is not None else uuid_mod.uuid4()
    ts = vhd_timestamp() if timestamp is None else timestamp
    geo = chs_for_size(virtual_size)
    code = _TYPE_CODES[dtype]
    footer = Footer.new(disk_type=code, size=virtual_size, cylinders=geo.cylinders,
                        heads=geo.heads, sectors=geo.sectors, unique_id=uid, timestamp=ts,
                        creator_app=creator_app,
                        data_offset=FIXED_DATA_OFFSET if code == DISK_TYPE_FIXED
                        else SECTOR_SIZE)
    with fileio.new_image(path) as fd:
        if dtype is DiskType.FIXED:
            _create_fixed(fd, virtual_size, footer, sparse)
        else:
            _create_dynamic(fd, path, virtual_size, footer, block_size, parent, parent_path)
        return VhdLayer(path, fd, writable=True)


def _create_fixed(fd: int, size: int, footer: Footer, sparse: bool) -> None:
    # Spec "Fixed Hard Disk Image": the data, then the 512-byte footer.
    if sparse:
        os.ftruncate(fd, size + FOOTER_SIZE)
    else:
        fileio.allocate(fd, 0, size + FOOTER_SIZE)
    fileio.pwrite(fd, footer.serialize(), size)


def _create_dynamic(fd: int, path: str, size: int, footer: Footer, block_size: int,
                    parent: Layer | None, parent_path: str | None) -> None:
    entries = -(-size // block_size)
    bat_region = align_up(entries * 4, DATA_ALIGNMENT)
    locators: list[ParentLocator] = []
    blobs: list[tuple[int, bytes]] = []
    parent_uuid = None
    parent_ts = 0
    parent_name = ""
    if parent is None:
        bat_off = 3 * SECTOR_SIZE  # right after the header, as Hyper-V and qemu do
        end = bat_off + bat_region
    else:
        ppath = os.path.abspath(parent_path or parent.path)
        parent_uuid = parent.link_id
        pf = getattr(parent, "footer", None)
        # Spec "Parent Time Stamp": we record the parent footer's timestamp (stable, so a
        # resumed operation writes the same bytes; qemu and libvhdi do not compare it).
        parent_ts = pf.timestamp if isinstance(pf, Footer) else vhd_timestamp(
            os.stat(ppath).st_mtime)
        parent_name = ppath
        # fat-differential.vhd: W2ku at 4096 (4 KiB space), BAT, W2ru (64 KiB space).
        w2ku = utf16le(ppath)
        w2ru = utf16le(relative_locator(ppath, path))
        ku_off = DATA_ALIGNMENT
        ku_space = max(DATA_ALIGNMENT, align_up(len(w2ku), DATA_ALIGNMENT))
        bat_off = ku_off + ku_space
        ru_off = bat_off + bat_region
        ru_space = max(65536, align_up(len(w2ru), DATA_ALIGNMENT))
        locators = [ParentLocator.new(PLATFORM_CODE_W2KU, ku_space, len(w2ku), ku_off),
                    ParentLocator.new(PLATFORM_CODE_W2RU, ru_space, len(w2ru), ru_off)]
        blobs = [(ku_off, w2ku), (ru_off, w2ru)]
        end = ru_off + ru_space
    header = DynamicHeader.new(table_offset=bat_off, max_table_entries=entries,
                               block_size=block_size, parent_unique_id=parent_uuid,
                               parent_timestamp=parent_ts, parent_name=parent_name,
                               locators=locators)
    footer_pos = slot_position(end)
    meta = bytearray(footer_pos)
    meta[0:FOOTER_SIZE] = footer.serialize()
    meta[SECTOR_SIZE:SECTOR_SIZE + HEADER_SIZE] = header.serialize()
    meta[bat_off:bat_off + bat_region] = b"\xff" * bat_region
    for off, blob in blobs:
        meta[off:off + len(blob)] = blob
    buf = bytes(meta) + footer.serialize()
    done = 0
    while done < len(buf):
        done += fileio.pwrite(fd, buf[done:], done)
