"""An operation that fails on its *input* removes its partial output, journal and lock
(issue 9, item 8): rerunning the same command then fails the same way (exit 3) instead of
being refused as an unfinished operation (exit 5) whose ``resume`` fails again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chains import create
from tests.vhdlib import damage
from tests.vhdmend.helpers import run_cli
from vhdlib import ops
from vhdlib.errors import ImageError
from vhdlib.layer import DiskType

MiB = 1 << 20


def _block_data_past_eof(folder: Path) -> Path:
    """A dynamic VHD whose header's block size was changed 2 -> 4 MiB (checksum
    recomputed): the blocks' data now runs past the end of the file."""
    path = folder / "src.vhd"
    with create("vhd", path, 8 * MiB, DiskType.DYNAMIC, block_size=2 * MiB) as layer:
        layer.write(2 * MiB, b"\x01" * 4096)  # block 1 only: the blocks do not overlap
        layer.flush()
    damage.set_field(path, "vhd.header", "block_size", 4 * MiB)
    return path


def test_convert_failing_on_input_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    src = _block_data_past_eof(folder)
    out = tmp_path / "out"
    out.mkdir()
    op = ops.prepare("convert", str(src), str(out / "dst.raw"), format="raw")
    with pytest.raises(ImageError):
        op.run()
    assert sorted(p.name for p in out.iterdir()) == []
    for _ in range(2):  # the same command again: the same typed error, not "unfinished"
        r = run_cli("convert", src, out / "dst.vhd", "--type", "dynamic")
        assert r.code == 3, r.err
        assert sorted(p.name for p in out.iterdir()) == []
