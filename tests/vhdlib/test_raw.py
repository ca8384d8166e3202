"""RawLayer: the output of convert --format raw."""

from __future__ import annotations

from pathlib import Path

import pytest

import vhdlib
from vhdlib.errors import ImageError, UsageError
from vhdlib.extents import SegmentState
from vhdlib.formats import open_layer
from vhdlib.raw import RawLayer, create


def test_create_allocated_and_sparse(tmp_path: Path) -> None:
    with create(tmp_path / "a.raw", 4 << 20) as layer:
        assert isinstance(layer, RawLayer)
        assert layer.allocated_bytes >= 4 << 20
        assert layer.virtual_size == 4 << 20
    with create(tmp_path / "s.raw", 4 << 20, sparse=True) as layer:
        assert layer.allocated_bytes < 1 << 20


def test_write_and_read_back(tmp_path: Path) -> None:
    with create(tmp_path / "a.raw", 1 << 20, sparse=True) as layer:
        layer.write(4096, b"\x42" * 1024)
        layer.write_zeroes(4096, 512)
        segs = list(layer.segments(0, 1 << 20))
        assert [(s.offset, s.length, s.state, s.file_offset) for s in segs] == [
            (0, 1 << 20, SegmentState.PRESENT, 0)]
        layer.flush()
    data = (tmp_path / "a.raw").read_bytes()
    assert data[4096:5120] == bytes(512) + b"\x42" * 512
    with open_layer(str(tmp_path / "a.raw"), fmt="raw") as layer:
        assert layer.format == "raw" and layer.link_id.int == 0
        disk = vhdlib.Disk([layer])
        assert disk.read(4608, 512) == b"\x42" * 512


def test_refusals(tmp_path: Path) -> None:
    (tmp_path / "x.raw").write_bytes(b"")
    with pytest.raises(UsageError):
        create(tmp_path / "x.raw", 512)
    with pytest.raises(UsageError):
        create(tmp_path / "y.raw", 1000)
    with pytest.raises(ImageError):
        open_layer(str(tmp_path / "x.raw"), fmt="raw")
    with create(tmp_path / "z.raw", 1024, sparse=True) as layer:
        with pytest.raises(UsageError):
            layer.write(1024, bytes(512))
        with pytest.raises(UsageError):
            layer.write(1, bytes(512))
    with open_layer(str(tmp_path / "z.raw"), fmt="raw") as ro, pytest.raises(UsageError):
        ro.write(0, bytes(512))
