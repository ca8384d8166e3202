"""Bad VHDX input: typed errors, no huge allocation, and never a write."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import vhdlib.chain as chain
from vhdlib import vhdx
from vhdlib.errors import ChecksumError, ImageError, UnsupportedError
from vhdlib.formats import open_layer
from vhdlib.vhdx import log as vhdx_log
from vhdlib.vhdx import structs as S

MiB = 1 << 20


def _base(tmp_path: Path) -> Path:
    path = tmp_path / "b.vhdx"
    with vhdx.create(str(path), 32 * MiB, "dynamic", block_size=MiB) as lay:
        lay.write(0, b"\x01" * MiB)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _patch(path: Path, off: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _read(path: Path, off: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def _regions(path: Path, edit: Callable[[S.RegionTable], None]) -> None:
    t = S.RegionTable.parse(_read(path, S.REGION_TABLE1_OFFSET, S.REGION_TABLE_SIZE))
    edit(t)
    raw = t.serialize()
    _patch(path, S.REGION_TABLE1_OFFSET, raw)
    _patch(path, S.REGION_TABLE2_OFFSET, raw)


def _meta_entry(path: Path, item: uuid.UUID, **changes: int) -> None:
    moff = 2 * MiB  # create() puts the metadata region at 2 MiB
    t = S.MetadataTable.parse(_read(path, moff, S.METADATA_TABLE_SIZE))
    e = next(x for x in t.entries if x.item_id == item)
    for k, v in changes.items():
        setattr(e, k, v)
    _patch(path, moff, t.serialize())


def _meta_value(path: Path, item: uuid.UUID, raw: bytes) -> None:
    moff = 2 * MiB
    t = S.MetadataTable.parse(_read(path, moff, S.METADATA_TABLE_SIZE))
    e = next(x for x in t.entries if x.item_id == item)
    _patch(path, moff + e.offset, raw)


def _flip(off: int) -> Callable[[Path], None]:
    def f(path: Path) -> None:
        _patch(path, off, bytes([_read(path, off, 1)[0] ^ 0xFF]))
    return f


def _both(*fs: Callable[[Path], None]) -> Callable[[Path], None]:
    def f(path: Path) -> None:
        for g in fs:
            g(path)
    return f


def _overlap(path: Path) -> None:
    def edit(t: S.RegionTable) -> None:
        t.entries[1].file_offset = t.entries[0].file_offset  # metadata over the BAT
    _regions(path, edit)


def _region_past_eof(path: Path) -> None:
    def edit(t: S.RegionTable) -> None:
        t.entries[0].length = 1 << 31
    _regions(path, edit)


def _region_over_log(path: Path) -> None:
    def edit(t: S.RegionTable) -> None:
        t.entries[1].file_offset = MiB
    _regions(path, edit)


def _unknown_required(path: Path) -> None:
    def edit(t: S.RegionTable) -> None:
        t.entries.append(S.RegionEntry(uuid.UUID(int=0xABC), 8 * MiB, MiB, True))
    _regions(path, edit)


def _dirty_log(target_offset: int) -> Callable[[Path], None]:
    def f(path: Path) -> None:
        g = uuid.UUID(int=0x1234)
        w = vhdx_log.LogWriter(-1, MiB, MiB, g)
        entry = w.build_entry([(target_offset, b"\x07" * 4096)], path.stat().st_size)
        _patch(path, MiB, entry)
        for off in (S.HEADER1_OFFSET, S.HEADER2_OFFSET):
            h = S.Header.parse(_read(path, off, S.HEADER_SIZE))
            _patch(path, off, h.copy(log_guid=g).serialize())
    return f


CASES: list[tuple[str, Callable[[Path], None], type[Exception], str]] = [
    ("both_headers_crc", _both(_flip(S.HEADER1_OFFSET + 50), _flip(S.HEADER2_OFFSET + 50)),
     ChecksumError, "CRC"),
    ("both_region_tables_crc", _both(_flip(S.REGION_TABLE1_OFFSET + 40),
                                     _flip(S.REGION_TABLE2_OFFSET + 40)), ChecksumError, "CRC"),
    ("identifier", _flip(0), ImageError, "vhdxfile"),
    ("overlapping_regions", _overlap, ImageError, "overlap"),
    ("region_over_log", _region_over_log, ImageError, "overlap"),
    ("region_past_eof", _region_past_eof, ImageError, "past the end"),
    ("unknown_required_region", _unknown_required, UnsupportedError,
     "00000000-0000-0000-0000-000000000abc"),
    ("metadata_item_out_of_bounds",
     lambda p: _meta_entry(p, S.VIRTUAL_DISK_SIZE_GUID, offset=MiB - 4), ImageError,
     "outside the metadata region"),
    ("metadata_item_before_table",
     lambda p: _meta_entry(p, S.FILE_PARAMETERS_GUID, offset=16), ImageError, "outside"),
    ("absurd_virtual_size",
     lambda p: _meta_value(p, S.VIRTUAL_DISK_SIZE_GUID, S.serialize_u64(1 << 62)),
     ImageError, "virtual disk size"),
    ("bat_larger_than_region",
     lambda p: _meta_value(p, S.VIRTUAL_DISK_SIZE_GUID, S.serialize_u64(1 << 45)),
     ImageError, "BAT region"),
    ("block_size_not_power_of_two",
     lambda p: _meta_value(p, S.FILE_PARAMETERS_GUID, S.serialize_u32(3 * MiB)),
     ImageError, "block size"),
    ("sector_size", lambda p: _meta_value(p, S.LOGICAL_SECTOR_SIZE_GUID, S.serialize_u32(1024)),
     ImageError, "sector sizes"),
    ("missing_metadata_item",
     lambda p: _meta_entry(p, S.PAGE83_DATA_GUID, is_required=True) or _meta_entry(
         p, S.LOGICAL_SECTOR_SIZE_GUID, length=0), ImageError, "logical sector size"),
    ("log_entry_past_eof", _dirty_log(1 << 33), ImageError, "past the end"),
    ("log_entry_over_headers", _dirty_log(S.HEADER1_OFFSET), ImageError, "header area"),
    ("truncated", lambda p: os.truncate(p, 300 * 1024), ImageError, "too small"),
]


@pytest.mark.parametrize(("mutate", "error", "text"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
@pytest.mark.parametrize("writable", [False, True])
def test_bad_input_is_a_typed_error_and_never_written(tmp_path, mutate, error, text,
                                                      writable):
    path = _base(tmp_path)
    mutate(path)
    before = _sha(path)
    with pytest.raises(error) as ei:
        open_layer(str(path), writable=writable).close()
    assert text in str(ei.value)
    assert _sha(path) == before


def test_log_entry_with_bad_crc_is_ignored(tmp_path):
    path = _base(tmp_path)
    _dirty_log(4 * MiB)(path)
    _flip(MiB + 200)(path)  # inside the entry: its CRC no longer matches
    before = _sha(path)
    with chain.open(str(path)) as disk:
        assert disk.top.info()["log"] == "clean"  # nothing valid to replay
        assert disk.read(0, 512) == b"\x01" * 512
    assert _sha(path) == before


def test_one_bad_header_is_tolerated_and_reported(tmp_path):
    path = _base(tmp_path)
    _flip(S.HEADER2_OFFSET + 50)(path)
    with open_layer(str(path)) as lay:
        assert [p.code for p in lay.check()] == ["header_checksum"]


def test_lenient_accepts_bad_header_crcs(tmp_path):
    path = _base(tmp_path)
    _both(_flip(S.HEADER1_OFFSET + 4000), _flip(S.HEADER2_OFFSET + 4000))(path)
    with chain.open(str(path), lenient=True) as disk:
        assert disk.read(0, 512) == b"\x01" * 512
        assert disk.top.warnings


def test_unknown_optional_region_is_accepted(tmp_path):
    path = _base(tmp_path)

    def edit(t: S.RegionTable) -> None:
        t.entries.append(S.RegionEntry(uuid.UUID(int=0xDEF), 8 * MiB, MiB, False))
        t.entries.reverse()  # metadata before BAT, as Disk2vhd writes it
    _regions(path, edit)
    with chain.open(str(path)) as disk:
        assert disk.read(0, 512) == b"\x01" * 512


def test_directory_and_garbage(tmp_path):
    from vhdlib.errors import NotADiskError
    with pytest.raises(NotADiskError):
        chain.open(str(tmp_path))
    junk = tmp_path / "junk.vhdx"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageError):
        chain.open(str(junk))
