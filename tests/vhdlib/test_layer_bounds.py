"""Every offset read from a file is checked against the file's size before use (issue 9,
item 1): a BAT entry near 2^44 MiB used to make a byte offset above 2^63 and an
OverflowError (exit 70) in ``os.preadv``."""

from __future__ import annotations

from pathlib import Path

import pytest

import vhdlib
from tests.chains import create
from tests.vhdlib import damage
from tests.vhdmend.helpers import run_cli
from vhdlib.errors import ImageError
from vhdlib.formats import open_layer
from vhdlib.layer import DiskType

MiB = 1 << 20
HUGE = (((1 << 44) - 1) << 20) | 6  # FileOffsetMB 2^44 - 1, FULLY_PRESENT / bitmap PRESENT


def _vhdx(folder: Path, child: bool) -> Path:
    base = folder / "base.vhdx"
    with create("vhdx", base, 16 * MiB, DiskType.DYNAMIC, block_size=MiB) as b:
        b.write(0, b"\x01" * MiB)
        b.flush()
        if not child:
            return base
        with create("vhdx", folder / "child.avhdx", None, DiskType.DIFFERENCING,
                    parent=b) as c:
            c.write(4096, b"\x02" * 4096)
            c.flush()
    return folder / "child.avhdx"


def test_pread_into_refuses_an_offset_past_the_file(tmp_path: Path) -> None:
    path = _vhdx(tmp_path, child=False)
    with open_layer(str(path)) as layer:
        size = layer.file_size
        for offset in (size, size - 100, 1 << 63, (1 << 64) + 5, -512):
            with pytest.raises(ImageError, match=r"past the end|truncated|negative"):
                layer.pread_into(offset, memoryview(bytearray(512)))


def test_payload_entry_near_2_pow_44_is_a_typed_error(tmp_path: Path) -> None:
    path = _vhdx(tmp_path, child=False)
    damage.set_field(path, "vhdx.bat", "bat[0].payload", HUGE)
    with pytest.raises(ImageError), vhdlib.open(str(path)) as disk:
        disk.read(0, 4096)
    r = run_cli("convert", path, tmp_path / "out.raw", "--format", "raw")
    assert r.code == 3, r.err
    assert "internal" not in r.err


def test_sector_bitmap_entry_near_2_pow_44_is_a_typed_error(tmp_path: Path) -> None:
    path = _vhdx(tmp_path, child=True)
    # 16 MiB of 1 MiB blocks: one chunk; its sector-bitmap entry closes it (MS-VHDX 2.5).
    name = next(f.name for f in damage.find(path, "vhdx.bat").fields if "bitmap" in f.name)
    damage.set_field(path, "vhdx.bat", name, HUGE)
    for command in (["map", "--json"], ["info", "--json"]):
        r = run_cli(*command, path)
        assert r.code in (0, 3), r.err
        assert "internal" not in r.err
    r = run_cli("map", "--json", path)
    assert r.code == 3, r.out
