"""Bad input: every failure is a typed vhdlib error, never a traceback, never a write."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

import vhdlib
from vhdlib.errors import (
    ChainLoopError,
    ChecksumError,
    ImageError,
    NotADiskError,
    ParentNotFoundError,
    VhdlibError,
)
from vhdlib.formats import open_layer
from vhdlib.vhd import VhdLayer, create
from vhdlib.vhd.structs import DynamicHeader, Footer

MIB = 1 << 20


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_everything(path: Path, **kw: object) -> None:
    """Open the chain and read it all; only VhdlibError may escape."""
    with vhdlib.open(path, **kw) as disk:  # type: ignore[arg-type]
        disk.read(0, disk.virtual_size)
        list(disk.extents())
        disk.info()
        for layer in disk.layers:
            layer.check()


def _must_be_typed(path: Path, **kw: object) -> VhdlibError | None:
    before = _sha(path)
    try:
        _read_everything(path, **kw)
        err = None
    except VhdlibError as e:
        err = e
    assert _sha(path) == before  # never a write
    return err


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "s.vhd"
    with create(path, MIB, "dynamic", block_size=256 * 1024) as layer:
        layer.write(0, b"\x11" * 4096)
        layer.write(512 * 1024, b"\x22" * 4096)
    return path


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_truncated_at_many_points(small: Path, tmp_path: Path) -> None:
    data = small.read_bytes()
    with open_layer(str(small)) as layer:
        store = layer.block_store()
        assert store is not None
        data_end = max(off + store.slot_size for i in range(store.block_count)
                       if (off := store.slot_offset(i)) is not None)
    assert data_end < len(data) - 512
    for cut in (0, 100, 511, 512, 700, 1024, 1536, 1600, 4096, 8000, len(data) // 2,
                len(data) - 600, len(data) - 512, len(data) - 100, len(data) - 1):
        p = tmp_path / f"cut{cut}.vhd"
        p.write_bytes(data[:cut])
        err = _must_be_typed(p)
        if cut < data_end:
            # Structures or block data are missing: that must be reported. Only a cut past
            # the last block (padding, trailing footer) may read, through the footer copy.
            assert err is not None, cut


def test_truncated_fixed(tmp_path: Path) -> None:
    p = tmp_path / "f.vhd"
    with create(p, MIB, "fixed", sparse=True):
        pass
    data = p.read_bytes()
    p.write_bytes(data[:MIB // 2] + data[-512:])  # footer intact, data missing
    with pytest.raises(ImageError, match="truncated"):
        open_layer(str(p))


def test_flipped_byte_in_every_metadata_byte(small: Path, tmp_path: Path) -> None:
    data = small.read_bytes()
    size = len(data)
    # Footer copy, header, BAT, trailing footer: every 3rd byte (keeps the run short).
    offsets = [*range(0, 1536, 3), *range(1536, 1536 + 16), *range(size - 512, size, 3)]
    p = tmp_path / "flip.vhd"
    for off in offsets:
        b = bytearray(data)
        b[off] ^= 0x5A
        p.write_bytes(b)
        _must_be_typed(p)
        _must_be_typed(p, lenient=True)


def test_flipped_trailing_footer_of_fixed_is_checksum_error(tmp_path: Path) -> None:
    p = tmp_path / "f.vhd"
    with create(p, MIB, "fixed", sparse=True):
        pass
    _patch(p, MIB + 40, b"\x99")
    with pytest.raises(ChecksumError, match="footer"):
        open_layer(str(p))


def test_flipped_header_is_checksum_error(small: Path) -> None:
    _patch(small, 512 + 30, b"\x99")
    with pytest.raises(ChecksumError, match="dynamic header"):
        open_layer(str(small))


def test_bat_entry_past_eof(small: Path) -> None:
    _patch(small, 1536, (0x00FFFFFF).to_bytes(4, "big"))
    with pytest.raises(ImageError, match="past the end"):
        open_layer(str(small))
    # Lenient: opens with a warning, reading that block is a typed error.
    with open_layer(str(small), lenient=True) as layer:
        assert any("allocation table" in w for w in layer.warnings)
        assert "bat_past_eof" in [p.code for p in layer.check()]
    err = _must_be_typed(small, lenient=True)
    assert isinstance(err, ImageError)


def test_bat_entries_overlapping(small: Path) -> None:
    first = small.read_bytes()[1536:1540]
    _patch(small, 1536 + 8, first)  # block 2 -> block 0's slot
    with pytest.raises(ImageError, match="overlap"):
        open_layer(str(small))
    with pytest.raises(ImageError):
        VhdLayer(str(small), os.open(small, os.O_RDWR), writable=True, lenient=True)
    with open_layer(str(small), lenient=True) as layer:
        assert "bat_overlap" in [p.code for p in layer.check()]


def test_bat_entry_into_metadata(small: Path) -> None:
    _patch(small, 1536, (1).to_bytes(4, "big"))  # sector 1: the header
    with pytest.raises(ImageError, match="metadata"):
        open_layer(str(small))


def _rewrite_header(path: Path, **changes: object) -> None:
    raw = path.read_bytes()[512:1536]
    h = dataclasses.replace(DynamicHeader.parse(raw), **changes).with_checksum()  # type: ignore[arg-type]
    _patch(path, 512, h.serialize())


def test_absurd_bat_size_no_huge_allocation(small: Path) -> None:
    _rewrite_header(small, max_table_entries=0xFFFFFFFF)
    tracemalloc.start()
    with pytest.raises(ImageError, match="outside the file"):
        open_layer(str(small))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * MIB


@pytest.mark.parametrize("bs", [0, 3, 1000, 1 << 31])
def test_absurd_block_size(small: Path, bs: int) -> None:
    _rewrite_header(small, block_size=bs)
    with pytest.raises(ImageError, match="block size"):
        open_layer(str(small))


def test_too_few_bat_entries(small: Path) -> None:
    _rewrite_header(small, max_table_entries=2)
    with pytest.raises(ImageError, match="entries"):
        open_layer(str(small))


def test_bad_disk_type_and_sizes(small: Path) -> None:
    data = small.read_bytes()
    f = Footer.parse(data[-512:])
    for changes, err in (({"disk_type": 5}, "disk type"), ({"current_size": 1000}, "multiple"),
                         ({"data_offset": 1 << 40}, "outside")):
        g = dataclasses.replace(f, **changes).with_checksum()  # type: ignore[arg-type]
        p = small.with_name("bad.vhd")
        p.write_bytes(g.serialize() + data[512:-512] + g.serialize())
        with pytest.raises(ImageError, match=err):
            open_layer(str(p))


def test_parent_loop(tmp_path: Path) -> None:
    x = create(tmp_path / "x.vhd", MIB, "dynamic")
    y = create(tmp_path / "y.vhd", None, "differencing", parent=x)
    z = create(tmp_path / "z.vhd", None, "differencing", parent=y)
    z_id = z.link_id
    for layer in (x, y, z):
        layer.close()
    # y now names z as its parent (by UUID): y -> z -> y.
    _rewrite_header(tmp_path / "y.vhd", parent_unique_id=z_id)
    with pytest.raises(ChainLoopError):
        vhdlib.open(tmp_path / "z.vhd")


def test_missing_parent(tmp_path: Path) -> None:
    x = create(tmp_path / "x.vhd", MIB, "dynamic")
    y = create(tmp_path / "y.vhd", None, "differencing", parent=x)
    x.close()
    y.close()
    (tmp_path / "x.vhd").unlink()
    with pytest.raises(ParentNotFoundError) as ei:
        vhdlib.open(tmp_path / "y.vhd")
    labels = " | ".join(ei.value.tried)
    assert "W2ru .\\x.vhd" in labels and "W2ku " in labels and "search by id" in labels


def test_directory_and_devices(tmp_path: Path) -> None:
    with pytest.raises(NotADiskError):
        vhdlib.open(tmp_path)
    with pytest.raises(NotADiskError):
        vhdlib.open("/dev/null")
    with pytest.raises(NotADiskError):
        vhdlib.open(tmp_path / "missing.vhd")
    fd = os.open("/dev/null", os.O_RDONLY)
    with pytest.raises(ImageError):
        VhdLayer("/dev/null", fd)
    os.close(fd)


@pytest.mark.parametrize("content", [b"", b"x" * 100, os.urandom(4096), b"conectix" * 64])
def test_garbage_files(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "g.vhd"
    p.write_bytes(content)
    with pytest.raises(ImageError):
        vhdlib.open(p)
