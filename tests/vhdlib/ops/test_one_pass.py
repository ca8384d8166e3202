"""One pass: collapsing a chain writes each sector of the result once (principle 3),
checked by recording every write vhdlib makes (fileio.WriteTracker)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, create, read_all
from vhdlib import ops
from vhdlib.extents import ExtentKind
from vhdlib.fileio import WriteTracker
from vhdlib.layer import DiskType

MiB = 1 << 20


@pytest.mark.parametrize("out_fmt", ["vhd", "raw"])
def test_collapsing_a_chain_writes_each_output_sector_once(tmp_path: Path, fmt: str,
                                                           out_fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, size=24 * MiB, writes=60)
    dest = tmp_path / f"out.{out_fmt}"
    partial = Path(str(dest) + ".vhdmend-partial")
    op = ops.prepare("remediate", str(chain.newest), str(dest), type="fixed",
                     format=out_fmt)
    with WriteTracker() as tracker:
        op.run(chunk_bytes=256 << 10)
    size = len(chain.ref)
    # The data area of a fixed output is [0, virtual size): no byte of it twice,
    assert tracker.overlaps(str(partial), 0, size) == []
    # and only non-zero data is written (zeros come from the reserved, unwritten space).
    written = sum(e - s for s, e in tracker.ranges(str(partial), 0, size))
    assert 0 < written <= op.plan.details["data_bytes"]
    got = dest.read_bytes() if out_fmt == "raw" else read_all(dest)
    assert got == chain.ref


def test_merge_writes_each_ancestor_sector_once(tmp_path: Path) -> None:
    # Given a fixed base (its data area is the virtual disk) and three snapshots whose
    # writes overlap each other
    size = 16 * MiB
    rnd = random.Random(3)
    ref = bytearray(size)
    layers = [create("vhd", tmp_path / "base.vhd", size, DiskType.FIXED)]
    for k in range(4):
        if k:
            layers.append(create("vhd", tmp_path / f"s{k}.avhd", None, DiskType.DIFFERENCING,
                                 parent=layers[-1]))
        for _ in range(40):
            n = 512 * rnd.randint(1, 256)
            off = 512 * rnd.randrange(0, (size - n) // 512)
            data = rnd.randbytes(n) if rnd.random() < 0.8 else bytes(n)
            layers[-1].write(off, data)
            ref[off:off + n] = data
        layers[-1].flush()
    for layer in layers:
        layer.close()
    newest = tmp_path / "s3.avhd"
    with vhdlib.open(str(newest)) as disk:
        union = sum(e.length for e in disk.extents(levels=3)
                    if e.kind is not ExtentKind.UNALLOCATED)
        per_layer = sum(1 for e in disk.extents(levels=3) if e.kind is ExtentKind.DATA)
    assert per_layer > 1
    # When the three snapshots are merged into the base in one pass
    op = ops.prepare("merge", str(newest), into=str(tmp_path / "base.vhd"), delete=True)
    with WriteTracker() as tracker:
        op.run(chunk_bytes=128 << 10)
    # Then every sector the snapshots define is written once, and nothing else is
    base = str(tmp_path / "base.vhd")
    assert tracker.overlaps(base, 0, size) == []
    assert sum(e - s for s, e in tracker.ranges(base, 0, size)) == union
    assert read_all(tmp_path / "base.vhd") == ref
