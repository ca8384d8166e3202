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


def _block_past_eof(folder: Path) -> Path:
    """A dynamic VHDX whose block 0 entry points just past the end of the file: it opens
    (BAT entries are checked when read), and the copy fails on it half-way."""
    path = folder / "src.vhdx"
    with create("vhdx", path, 16 * MiB, DiskType.DYNAMIC, block_size=MiB) as layer:
        layer.write(0, b"\x01" * MiB)
        layer.flush()
    past_mb = (path.stat().st_size >> 20) + 1
    damage.set_field(path, "vhdx.bat", "bat[0].payload", past_mb << 20 | 6)
    return path


def test_convert_failing_on_input_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    src = _block_past_eof(folder)
    out = tmp_path / "out"
    out.mkdir()
    op = ops.prepare("convert", str(src), str(out / "dst.raw"), format="raw")
    with pytest.raises(ImageError, match="truncated"):
        op.run()
    assert sorted(p.name for p in out.iterdir()) == []
    for _ in range(2):  # the same command again: the same typed error, not "unfinished"
        r = run_cli("convert", src, out / "dst.vhd", "--type", "dynamic")
        assert r.code == 3, r.err
        assert sorted(p.name for p in out.iterdir()) == []
