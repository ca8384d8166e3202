"""check() / repair() and the BlockStore used by compaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import vhdlib
from vhdlib.errors import ChecksumError, UsageError
from vhdlib.formats import open_layer
from vhdlib.vhd import VhdBlockStore, VhdLayer, create

MIB = 1 << 20


def _rw(path: Path, lenient: bool = False) -> VhdLayer:
    return VhdLayer(str(path), os.open(path, os.O_RDWR), writable=True, lenient=lenient)


def _content(path: Path) -> bytes:
    with vhdlib.open(path) as disk:
        return disk.read(0, disk.virtual_size)


@pytest.fixture
def dyn(tmp_path: Path) -> Path:
    path = tmp_path / "d.vhd"
    with create(path, 8 * MIB, "dynamic") as layer:
        layer.write(0, b"\x5a" * MIB)
        layer.write(4 * MIB, b"\xa5" * 4096)
    return path


def test_clean(dyn: Path) -> None:
    with open_layer(str(dyn)) as layer:
        assert layer.check() == []


def test_footer_copy_mismatch_repaired(dyn: Path) -> None:
    with open(dyn, "r+b") as f:
        f.seek(20)
        f.write(b"\x01")
    with open_layer(str(dyn)) as layer:
        assert [p.code for p in layer.check()] == ["footer_copy_mismatch"]
    with _rw(dyn) as layer:
        assert layer.repair() == ["rewrote the footer copy at offset 0"]
        assert layer.check() == []


def test_missing_trailing_footer_uses_copy_and_repairs(dyn: Path) -> None:
    before = _content(dyn)
    size = dyn.stat().st_size
    os.truncate(dyn, size - 512)
    with open_layer(str(dyn)) as layer:
        assert any("offset 0" in w for w in layer.warnings)
        assert [p.code for p in layer.check()] == ["footer_missing"]
    assert _content(dyn) == before
    with _rw(dyn) as layer:
        done = layer.repair()
        assert done and "trailing footer" in done[0]
        assert layer.check() == []
    assert dyn.stat().st_size == size
    assert _content(dyn) == before


def test_damaged_trailing_footer_uses_copy(dyn: Path) -> None:
    size = dyn.stat().st_size
    with open(dyn, "r+b") as f:
        f.seek(size - 512 + 30)
        f.write(b"\xff\xff")
    with open_layer(str(dyn)) as layer:
        assert any("damaged" in w for w in layer.warnings)
    with _rw(dyn) as layer:
        layer.repair()
    with open_layer(str(dyn)) as layer:
        assert layer.check() == [] and layer.warnings == []


def test_orphan_tail_trimmed(dyn: Path) -> None:
    before = _content(dyn)
    data = dyn.read_bytes()
    footer = data[-512:]
    # An unreferenced 3 MiB slot before the footer (a kill between footer and BAT write).
    dyn.write_bytes(data[:-512] + b"\x77" * (3 * MIB) + footer)
    with open_layer(str(dyn)) as layer:
        assert [p.code for p in layer.check()] == ["orphan_tail"]
    with _rw(dyn) as layer:
        assert layer.repair()
        assert layer.check() == []
    assert dyn.stat().st_size == len(data)
    assert _content(dyn) == before


def test_header_checksum_reported(dyn: Path) -> None:
    with open(dyn, "r+b") as f:
        f.seek(512 + 64)  # parent unicode name area (unused in a dynamic disk)
        f.write(b"\x01")
    with pytest.raises(ChecksumError, match="dynamic header"):
        open_layer(str(dyn))
    with open_layer(str(dyn), lenient=True) as layer:
        assert "header_checksum" in [p.code for p in layer.check()]


def test_repair_needs_writable(dyn: Path) -> None:
    with open_layer(str(dyn)) as layer, pytest.raises(UsageError):
        layer.repair()


def test_fixed_and_raw_have_no_block_store(tmp_path: Path) -> None:
    with create(tmp_path / "f.vhd", MIB, "fixed", sparse=True) as layer:
        assert layer.block_store() is None
        assert layer.check() == []


# --- BlockStore ---------------------------------------------------------------------------

def test_block_store_dynamic_compaction(tmp_path: Path) -> None:
    path = tmp_path / "c.vhd"
    with create(path, 8 * MIB, "dynamic") as layer:
        layer.write(0, b"\x01" * 4096)            # block 0: data
        layer.write(2 * MIB, bytes(2 * MIB))      # block 1: allocated, all zero
        layer.write(6 * MIB, b"\x03" * 4096)      # block 3: data (last slot)
    before = _content(path)
    with _rw(path) as layer:
        bs = layer.block_store()
        assert isinstance(bs, VhdBlockStore)
        assert bs.block_count == 4 and bs.slot_size == 2 * MIB + 512
        assert [bs.droppable(i) for i in range(4)] == [False, True, True, False]
        hole = bs.slot_offset(1)
        assert hole is not None and bs.slot_offset(2) is None
        assert hole >= bs.data_area_start()
        assert all(not (s < hole + bs.slot_size and hole < e)
                   for s, e in bs.reserved_ranges())
        bs.drop(1)
        bs.drop(1)  # idempotent
        bs.move(3, hole)
        bs.move(3, hole)  # idempotent
        end = hole + bs.slot_size
        bs.truncate_after(end)
        assert layer.check() == []
    assert path.stat().st_size == end + 512
    assert _content(path) == before
    with open_layer(str(path)) as layer:
        assert layer.check() == []


def test_block_store_differencing_keeps_present_zeros(tmp_path: Path) -> None:
    base = create(tmp_path / "b.vhd", 4 * MIB, "dynamic")
    base.write(0, b"\x09" * (4 * MIB))
    child = create(tmp_path / "c.vhd", None, "differencing", parent=base)
    child.write_zeroes(0, 4096)  # present zeros hide the parent
    bs = child.block_store()
    assert bs is not None
    assert bs.droppable(0) is False
    assert bs.droppable(1) is True  # unallocated
    child.close()
    base.close()
    assert _content(tmp_path / "c.vhd")[:4097] == bytes(4096) + b"\x09"


def test_truncate_after_refuses_cutting_blocks(dyn: Path) -> None:
    with _rw(dyn) as layer:
        bs = layer.block_store()
        assert bs is not None
        with pytest.raises(UsageError):
            bs.truncate_after(4096)
