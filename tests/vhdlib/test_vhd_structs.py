"""VHD structures round-trip: parse(serialize(x)) == x, byte for byte on real images."""

from __future__ import annotations

from uuid import UUID

import pytest

from tests import realimages
from vhdlib.errors import ImageError
from vhdlib.vhd.structs import (
    BAT_ENTRY_UNUSED,
    FOOTER_SIZE,
    PLATFORM_CODE_W2KU,
    PLATFORM_CODE_W2RU,
    Bat,
    DynamicHeader,
    Footer,
    ParentLocator,
    bitmap_size,
    unix_time,
    vhd_timestamp,
)

VHDS = [i.name for i in realimages.IMAGES if i.suffix in (".vhd", ".vhdf")]


@pytest.mark.parametrize("name", VHDS)
def test_real_footer_round_trips(name: str) -> None:
    data = realimages.materialize(name).read_bytes()
    tail = data[-FOOTER_SIZE:]
    f = Footer.parse(tail)
    assert f.serialize() == tail
    assert Footer.parse(f.serialize()) == f
    if not realimages.BY_NAME[name].lenient:
        assert f.checksum_ok


@pytest.mark.parametrize("name", [n for n in VHDS if not n.endswith(("fixed.vhd", ".vhdf"))])
def test_real_header_and_bat_round_trip(name: str) -> None:
    data = realimages.materialize(name).read_bytes()
    raw = data[512:1536]
    h = DynamicHeader.parse(raw)
    assert h.serialize() == raw
    assert DynamicHeader.parse(h.serialize()) == h
    for loc in h.locators:
        assert ParentLocator.parse(loc.serialize()) == loc
    n = h.max_table_entries
    bat_raw = data[h.table_offset:h.table_offset + 4 * n]
    bat = Bat.parse(bat_raw, n)
    assert bat.serialize() == bat_raw
    assert len(bat) == n


def test_fat_differential_header_facts() -> None:
    data = realimages.materialize("dfvfs/fat-differential.vhd").read_bytes()
    h = DynamicHeader.parse(data[512:1536])
    assert h.parent_unique_id == UUID("5fa21a55-f394-aa4d-9958-1951a67d5540")
    assert h.parent_unicode_name == "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd"
    used = [loc for loc in h.locators if loc.used]
    assert [loc.platform_code for loc in used] == [PLATFORM_CODE_W2KU, PLATFORM_CODE_W2RU]
    # Windows writes the space in bytes (MANIFEST section 4).
    assert used[1].data_space == 65536 and used[1].space_bytes() == 65536


def test_new_structures_have_valid_checksums() -> None:
    f = Footer.new(disk_type=3, size=1 << 20, cylinders=1, heads=4, sectors=17,
                   unique_id=UUID(int=5), timestamp=7, data_offset=512)
    assert f.checksum_ok and Footer.parse(f.serialize()) == f
    h = DynamicHeader.new(table_offset=1536, max_table_entries=1, block_size=2 << 20,
                          parent_name="a.vhd",
                          locators=[ParentLocator.new(PLATFORM_CODE_W2RU, 512, 10, 4096)])
    assert h.checksum_ok and DynamicHeader.parse(h.serialize()) == h
    assert h.parent_unicode_name == "a.vhd"
    bat = Bat.new(3)
    assert list(bat.entries) == [BAT_ENTRY_UNUSED] * 3
    assert Bat.parse(bat.serialize(), 3) == bat


def test_old_511_byte_footer_parses() -> None:
    f = Footer.new(disk_type=2, size=1 << 20, cylinders=1, heads=4, sectors=17,
                   unique_id=UUID(int=1), timestamp=1)
    assert Footer.parse(f.serialize()[:511]) == f


def test_short_input_is_image_error() -> None:
    with pytest.raises(ImageError):
        Footer.parse(b"conectix")
    with pytest.raises(ImageError):
        DynamicHeader.parse(bytes(100))
    with pytest.raises(ImageError):
        Bat.parse(bytes(7), 2)


@pytest.mark.parametrize(("block", "size"), [(512, 512), (4096, 512), (2 << 20, 512),
                                             (16 << 20, 4096)])
def test_bitmap_size(block: int, size: int) -> None:
    assert bitmap_size(block) == size


def test_timestamps() -> None:
    assert vhd_timestamp(946684800 + 5) == 5
    assert unix_time(5) == 946684805
    assert vhd_timestamp(0) == 0
