"""Round trips and spec constants of the VHDX structures (MS-VHDX 2.2-2.6)."""

from __future__ import annotations

from uuid import UUID

import pytest

from vhdlib.vhdx import structs as S


def test_guid_constants_have_the_spec_values():
    assert UUID("2dc27766-f623-4200-9d64-115e9bfd4a08") == S.BAT_REGION_GUID
    assert UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e") == S.METADATA_REGION_GUID
    assert S.PAYLOAD_BLOCK_FULLY_PRESENT == 6
    assert S.PAYLOAD_BLOCK_PARTIALLY_PRESENT == 7
    # GUIDs are stored mixed-endian: the first three fields little-endian.
    assert S.BAT_REGION_GUID.bytes_le[:4] == bytes.fromhex("6677c22d")


def test_file_identifier_round_trip():
    fi = S.FileIdentifier.new("Microsoft Windows 10.0.18363.0")
    raw = fi.serialize()
    assert len(raw) == 64 * 1024 and raw[:8] == b"vhdxfile"
    assert S.FileIdentifier.parse(raw) == fi
    with pytest.raises(S.StructError):
        S.FileIdentifier.parse(b"x" * 1024)


def test_header_round_trip_and_crc():
    h = S.Header.new(7, UUID(int=1), UUID(int=2), 1 << 20, 1 << 20)
    raw = h.serialize()
    assert len(raw) == 4096
    back = S.Header.parse(raw)
    assert back.valid and back.sequence_number == 7 and back.data_write_guid == UUID(int=2)
    assert back.serialize() == raw
    bad = bytearray(raw)
    bad[100] ^= 1
    assert not S.Header.parse(bytes(bad)).valid


def test_region_table_round_trip():
    t = S.RegionTable.new([S.RegionEntry(S.BAT_REGION_GUID, 3 << 20, 1 << 20, True),
                           S.RegionEntry(S.METADATA_REGION_GUID, 2 << 20, 1 << 20, False)])
    raw = t.serialize()
    back = S.RegionTable.parse(raw)
    assert back.valid and back.entries == t.entries and back.serialize() == raw
    assert back.find(S.BAT_REGION_GUID).file_offset == 3 << 20


def test_log_structures_round_trip():
    hdr = S.LogEntryHeader.new(8192, 0, 5, 1, UUID(int=9), 1 << 22, 1 << 22)
    assert S.LogEntryHeader.parse(hdr.serialize()) == hdr
    z = S.ZeroDescriptor.new(4096, 1 << 20, 5)
    assert S.ZeroDescriptor.parse(z.serialize()) == z
    sector = bytes(range(256)) * 16
    d = S.DataDescriptor.new(sector, 3 << 20, 5)
    assert S.DataDescriptor.parse(d.serialize()) == d
    ds = S.DataSector.new(sector, (1 << 40) + 3)
    raw = ds.serialize()
    assert len(raw) == 4096 and S.DataSector.parse(raw) == ds
    # The sector is rebuilt from the descriptor's leading/trailing bytes and the data.
    assert d.leading_bytes + ds.data + d.trailing_bytes == sector
    assert ds.sequence_number == (1 << 40) + 3


def test_metadata_round_trip():
    t = S.MetadataTable.new([S.MetadataEntry(S.FILE_PARAMETERS_GUID, 65536, 8, False, False,
                                             True)])
    raw = t.serialize()
    assert S.MetadataTable.parse(raw) == t and S.MetadataTable.parse(raw).serialize() == raw
    fp = S.FileParameters.new(32 << 20, True, False)
    assert S.FileParameters.parse(fp.serialize()) == fp
    assert S.parse_u64(S.serialize_u64(1 << 40)) == 1 << 40
    assert S.parse_u32(S.serialize_u32(4096)) == 4096


def test_parent_locator_round_trip():
    pl = S.ParentLocator.new([("parent_linkage", "{ff34003b-11ed-4cf8-a166-b2be05e20b80}"),
                              ("relative_path", ".\\base.vhdx")])
    raw = pl.serialize()
    back = S.ParentLocator.parse(raw)
    assert back == pl and back.serialize() == raw
    assert back.get("relative_path") == ".\\base.vhdx"
    with pytest.raises(S.StructError):
        S.ParentLocator.parse(raw[:30])


@pytest.mark.parametrize(("vsize", "bs", "sector", "parent", "ratio", "count"), [
    (10 << 20, 2 << 20, 512, False, 2048, 5),               # dissect fixed.vhdx
    (10 << 20, 32 << 20, 512, False, 128, 1),               # dissect dynamic.vhdx
    (8 << 30, 2 << 20, 512, True, 2048, 2 * 2049),          # differencing.avhdx
    (1 << 30, 32 << 20, 512, False, 128, 32),
    (300 << 30, 32 << 20, 512, False, 128, 9600 + 9599 // 128),
    (1 << 30, 1 << 20, 4096, False, 32768, 1024),
])
def test_chunk_ratio_and_bat_count(vsize, bs, sector, parent, ratio, count):
    assert S.chunk_ratio(bs, sector) == ratio
    assert S.bat_entry_count(vsize, bs, sector, parent) == count


def test_bat_entry_packing():
    e = S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT, 5 << 20)
    assert S.bat_state(e) == 6 and S.bat_offset(e) == 5 << 20
    assert S.bat_entry(S.PAYLOAD_BLOCK_ZERO, 0) == 2
