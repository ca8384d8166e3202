"""Where the structures of a VHD or VHDX file lie, parsed without vhdlib.

The fuzzer must not share vhdlib's reading of a file (a bug there would hide itself), so
this module parses both formats from the specifications alone: the VHD footer, dynamic
header, BAT, block bitmaps and parent locators (Virtual Hard Disk Image Format
Specification 1.0), and the VHDX file identifier, headers, region tables, BAT, metadata
items, parent locator entries and log entries (MS-VHDX 2.2-2.6). Each structure is a
:class:`Struct`: a named byte range with its fields and, where the format has one, how to
recompute its checksum after a mutation.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import crc32c

KiB = 1024
MiB = 1 << 20

VHD_COOKIE = b"conectix"
VHD_DYN_COOKIE = b"cxsparse"
VHDX_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
VHDX_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VHDX_VIRTUAL_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VHDX_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")


@dataclass(frozen=True)
class Field:
    """One integer field: offset within its structure, width in bytes, byte order."""

    name: str
    offset: int
    size: int
    big_endian: bool


@dataclass
class Struct:
    """A structure at ``offset`` of ``size`` bytes; ``fix`` recomputes its checksum."""

    kind: str
    offset: int
    size: int
    fields: list[Field] = field(default_factory=list)
    fix: Callable[[bytearray, int], None] | None = None


def _vhd_sum_fix(size: int, at: int) -> Callable[[bytearray, int], None]:
    """VHD ones'-complement checksum over ``size`` bytes, stored big-endian at ``at``."""
    def fix(data: bytearray, off: int) -> None:
        if off + size > len(data):
            return
        data[off + at: off + at + 4] = bytes(4)
        total = sum(data[off: off + size])
        data[off + at: off + at + 4] = struct.pack(">I", (~total) & 0xFFFFFFFF)
    return fix


def _crc_fix(size: int | None) -> Callable[[bytearray, int], None]:
    """VHDX CRC-32C at +4 over ``size`` bytes (``None``: the entry length at +8)."""
    def fix(data: bytearray, off: int) -> None:
        n = size if size is not None else struct.unpack_from("<I", data, off + 8)[0]
        if n < 8 or off + n > len(data):
            return
        data[off + 4: off + 8] = bytes(4)
        data[off + 4: off + 8] = struct.pack("<I", crc32c.crc32c(bytes(data[off: off + n])))
    return fix


def _u(data: bytes | bytearray, fmt: str, off: int) -> int:
    if off < 0 or off + struct.calcsize(fmt) > len(data):
        return 0
    return int(struct.unpack_from(fmt, data, off)[0])


def detect(data: bytes | bytearray) -> str | None:
    """``"vhd"``, ``"vhdx"`` or ``None``."""
    if data[:8] == b"vhdxfile":
        return "vhdx"
    if len(data) >= 512 and (data[-512:-504] == VHD_COOKIE or data[-511:-503] == VHD_COOKIE
                             or data[:8] == VHD_COOKIE):
        return "vhd"
    return None


def structures(data: bytes | bytearray) -> list[Struct]:
    """Every structure found in ``data`` (a whole image file), best effort."""
    fmt = detect(data)
    if fmt == "vhd":
        return _vhd(data)
    if fmt == "vhdx":
        return _vhdx(data)
    return []


# --- VHD ------------------------------------------------------------------------------------

_FOOTER_FIELDS = [Field("features", 8, 4, True), Field("version", 12, 4, True),
                  Field("data_offset", 16, 8, True), Field("timestamp", 24, 4, True),
                  Field("original_size", 40, 8, True), Field("current_size", 48, 8, True),
                  Field("cylinders", 56, 2, True), Field("heads", 58, 1, True),
                  Field("sectors", 59, 1, True), Field("disk_type", 60, 4, True),
                  Field("checksum", 64, 4, True), Field("uuid_lo", 68, 8, True),
                  Field("uuid_hi", 76, 8, True), Field("saved_state", 84, 1, True)]
_HEADER_FIELDS = [Field("data_offset", 8, 8, True), Field("table_offset", 16, 8, True),
                  Field("header_version", 24, 4, True), Field("max_table_entries", 28, 4, True),
                  Field("block_size", 32, 4, True), Field("checksum", 36, 4, True),
                  Field("parent_uuid_lo", 40, 8, True), Field("parent_uuid_hi", 48, 8, True),
                  Field("parent_timestamp", 56, 4, True)]


def _vhd(data: bytes | bytearray) -> list[Struct]:
    out: list[Struct] = []
    n = len(data)
    footer_at = n - 512 if data[n - 512: n - 504] == VHD_COOKIE else n - 511
    fix = _vhd_sum_fix(512, 64)
    out.append(Struct("vhd.footer", footer_at, 512, list(_FOOTER_FIELDS), fix))
    if data[:8] == VHD_COOKIE and footer_at != 0:
        out.append(Struct("vhd.footer_copy", 0, 512, list(_FOOTER_FIELDS), fix))
    disk_type = _u(data, ">I", footer_at + 60)
    hdr = _u(data, ">Q", footer_at + 16)
    if disk_type not in (3, 4) or hdr + 1024 > n or data[hdr: hdr + 8] != VHD_DYN_COOKIE:
        return out
    locators = [Field(f"loc{i}.{name}", 576 + 24 * i + at, size, True)
                for i in range(8)
                for name, at, size in (("code", 0, 4), ("space", 4, 4), ("length", 8, 4),
                                       ("offset", 16, 8))]
    out.append(Struct("vhd.header", hdr, 1024, _HEADER_FIELDS + locators,
                      _vhd_sum_fix(1024, 36)))
    table = _u(data, ">Q", hdr + 16)
    entries = _u(data, ">I", hdr + 28)
    block = _u(data, ">I", hdr + 32)
    if table + 4 * entries <= n and 0 < entries < 1 << 22:
        bat = Struct("vhd.bat", table, 4 * entries)
        bat.fields = [Field(f"bat[{i}]", 4 * i, 4, True) for i in range(min(entries, 8192))]
        out.append(bat)
        bitmap = max(512, -(-(block // 512) // 8 // 512) * 512) if block else 512
        view = memoryview(data)[table: table + 4 * entries]
        for (sector,) in struct.iter_unpack(">I", view):
            if sector != 0xFFFFFFFF and sector * 512 + bitmap <= n:
                out.append(Struct("vhd.bitmap", sector * 512, bitmap,
                                  [Field("bits", 0, 1, True)]))
    for i in range(8):
        code = _u(data, ">I", hdr + 576 + 24 * i)
        length = _u(data, ">I", hdr + 576 + 24 * i + 8)
        off = _u(data, ">Q", hdr + 576 + 24 * i + 16)
        if code and 0 < length <= 4096 and off + length <= n:
            out.append(Struct("vhd.locator_data", off, length, [Field("byte", 0, 1, True)]))
    return out


# --- VHDX -----------------------------------------------------------------------------------

_VHDX_HEADER_FIELDS = [Field("checksum", 4, 4, False), Field("sequence", 8, 8, False),
                       Field("file_write_guid", 16, 8, False),
                       Field("data_write_guid", 32, 8, False),
                       Field("log_guid", 48, 8, False), Field("log_version", 64, 2, False),
                       Field("version", 66, 2, False), Field("log_length", 68, 4, False),
                       Field("log_offset", 72, 8, False)]


def _vhdx(data: bytes | bytearray) -> list[Struct]:
    out: list[Struct] = [Struct("vhdx.identifier", 0, 8, [Field("signature", 0, 8, False)])]
    head_fix = _crc_fix(4 * KiB)
    logs: list[tuple[int, int]] = []
    for at in (64 * KiB, 128 * KiB):
        if data[at: at + 4] == b"head":
            out.append(Struct("vhdx.header", at, 4 * KiB, list(_VHDX_HEADER_FIELDS), head_fix))
            logs.append((_u(data, "<Q", at + 72), _u(data, "<I", at + 68)))
    regions: dict[uuid.UUID, tuple[int, int]] = {}
    for at in (192 * KiB, 256 * KiB):
        if data[at: at + 4] != b"regi":
            continue
        count = min(_u(data, "<I", at + 8), 2047)
        fields = [Field("checksum", 4, 4, False), Field("entry_count", 8, 4, False)]
        for i in range(count):
            e = 16 + 32 * i
            fields += [Field(f"r{i}.offset", e + 16, 8, False),
                       Field(f"r{i}.length", e + 24, 4, False),
                       Field(f"r{i}.required", e + 28, 4, False)]
            guid = uuid.UUID(bytes_le=bytes(data[at + e: at + e + 16]))
            regions.setdefault(guid, (_u(data, "<Q", at + e + 16), _u(data, "<I", at + e + 24)))
        out.append(Struct("vhdx.region_table", at, 64 * KiB, fields, _crc_fix(64 * KiB)))
    block_size, virtual_size, sector = _vhdx_metadata(data, regions.get(VHDX_METADATA), out)
    bat = regions.get(VHDX_BAT)
    if bat and bat[0] + bat[1] <= len(data):
        st = Struct("vhdx.bat", bat[0], bat[1])
        chunk = (1 << 23) * sector // block_size if block_size else 0
        blocks = -(-virtual_size // block_size) if block_size else 0
        # Payload entries in use (capped, so that a 10 GiB disk costs no more than a small
        # one) and the sector-bitmap entry closing each chunk (MS-VHDX 2.5).
        total = bat[1] // 8
        chunks = -(-blocks // chunk) if chunk else 0
        indices = sorted({*range(min(total, blocks + chunks, 8192)),
                          *(k * (chunk + 1) + chunk for k in range(min(chunks, 4096)))})
        for i in (i for i in indices if i < total):
            kind = "bitmap" if chunk and i % (chunk + 1) == chunk else "payload"
            st.fields.append(Field(f"bat[{i}].{kind}", 8 * i, 8, False))
            value = _u(data, "<Q", bat[0] + 8 * i)
            state, mb = value & 7, value >> 20
            if kind == "bitmap" and state == 6 and (mb << 20) + MiB <= len(data):
                out.append(Struct("vhdx.sector_bitmap", mb << 20, MiB,
                                  [Field("bits", 0, 1, False)]))
        out.append(st)
    for offset, length in logs[:1]:
        _vhdx_log(data, offset, length, out)
    return out


def _vhdx_metadata(data: bytes | bytearray, region: tuple[int, int] | None,
                   out: list[Struct]) -> tuple[int, int, int]:
    block_size = virtual_size = 0
    sector = 512
    if not region or region[0] + 64 * KiB > len(data):
        return block_size, virtual_size, sector
    base = region[0]
    if data[base: base + 8] != b"metadata":
        return block_size, virtual_size, sector
    count = min(_u(data, "<H", base + 10), 2047)
    table = Struct("vhdx.metadata_table", base, 64 * KiB, [Field("entry_count", 10, 2, False)])
    for i in range(count):
        e = base + 32 + 32 * i
        guid = uuid.UUID(bytes_le=bytes(data[e: e + 16]))
        off = _u(data, "<I", e + 16)
        length = _u(data, "<I", e + 20)
        table.fields += [Field(f"m{i}.offset", 32 + 32 * i + 16, 4, False),
                         Field(f"m{i}.length", 32 + 32 * i + 20, 4, False),
                         Field(f"m{i}.flags", 32 + 32 * i + 24, 4, False)]
        item = base + off
        if off == 0 or item + length > len(data):
            continue
        if guid == VHDX_FILE_PARAMETERS:
            block_size = _u(data, "<I", item)
            out.append(Struct("vhdx.file_parameters", item, 8,
                              [Field("block_size", 0, 4, False), Field("flags", 4, 4, False)]))
        elif guid == VHDX_VIRTUAL_SIZE:
            virtual_size = _u(data, "<Q", item)
            out.append(Struct("vhdx.virtual_size", item, 8, [Field("size", 0, 8, False)]))
        elif guid == VHDX_LOGICAL_SECTOR:
            sector = _u(data, "<I", item) or 512
            out.append(Struct("vhdx.logical_sector", item, 4, [Field("size", 0, 4, False)]))
        elif guid == VHDX_PARENT_LOCATOR:
            out.append(_vhdx_locator(data, item, length))
        elif length:
            out.append(Struct("vhdx.metadata_item", item, length, [Field("byte", 0, 1, False)]))
    out.append(table)
    return block_size, virtual_size, sector or 512


def _vhdx_locator(data: bytes | bytearray, item: int, length: int) -> Struct:
    """Parent locator (MS-VHDX 2.6.2.6): key/value entries, UTF-16LE strings."""
    st = Struct("vhdx.parent_locator", item, length, [Field("key_value_count", 18, 2, False)])
    count = min(_u(data, "<H", item + 18), 64)
    for i in range(count):
        e = 20 + 12 * i
        st.fields += [Field(f"kv{i}.key_offset", e, 4, False),
                      Field(f"kv{i}.value_offset", e + 4, 4, False),
                      Field(f"kv{i}.key_length", e + 8, 2, False),
                      Field(f"kv{i}.value_length", e + 10, 2, False)]
    return st


def _vhdx_log(data: bytes | bytearray, offset: int, length: int, out: list[Struct]) -> None:
    """Log entries (MS-VHDX 2.3.1): walk the log region, 4 KiB aligned."""
    if not length or offset + length > len(data):
        return
    pos = offset
    fix = _crc_fix(None)
    while pos + 64 <= offset + length:
        if data[pos: pos + 4] != b"loge":
            pos += 4 * KiB
            continue
        size = _u(data, "<I", pos + 8)
        out.append(Struct("vhdx.log_entry", pos, max(64, min(size, offset + length - pos)),
                          [Field("checksum", 4, 4, False), Field("entry_length", 8, 4, False),
                           Field("tail", 12, 4, False), Field("sequence", 16, 8, False),
                           Field("descriptor_count", 24, 4, False),
                           Field("flushed_offset", 48, 8, False),
                           Field("last_offset", 56, 8, False),
                           Field("d0.kind", 64, 4, False), Field("d0.trailing", 68, 4, False),
                           Field("d0.leading", 72, 8, False),
                           Field("d0.file_offset", 80, 8, False),
                           Field("d0.sequence", 88, 8, False)], fix))
        pos += max(4 * KiB, -(-size // (4 * KiB)) * 4 * KiB) if size else 4 * KiB

