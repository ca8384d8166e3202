"""Property: on random chains with random sector-granular writes, every operation
preserves exactly what the chain reads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chains import create, read_all
from vhdlib import ops
from vhdlib.layer import DiskType

MiB = 1 << 20
SIZE = 4 * MiB
SECTORS = SIZE // 512

# A write: (layer index, first sector, sector count, fill byte; 0 = explicit zeros)
writes_st = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, SECTORS - 1), st.integers(1, 300),
              st.sampled_from([0, 0x11, 0xA5, 0xFF])),
    min_size=1, max_size=25)

OPERATIONS = ["remediate-fixed", "remediate-dynamic", "merge-parent", "merge-base",
              "compact-top", "convert-raw"]


def build(folder: Path, fmt: str, layers: int, writes: list[tuple[int, int, int, int]]
          ) -> tuple[list[Path], bytearray]:
    ext = {"vhd": (".vhd", ".avhd"), "vhdx": (".vhdx", ".avhdx")}[fmt]
    block = 512 << 10 if fmt == "vhd" else MiB
    paths: list[Path] = []
    opened = []
    for k in range(layers):
        if k == 0:
            paths.append(folder / f"base{ext[0]}")
            layer = create(fmt, paths[0], SIZE, DiskType.DYNAMIC, block_size=block)
        else:
            # Created after its parent's writes: a VHDX parent renews its DataWriteGuid
            # when written, and a child links to the id it had at creation.
            paths.append(folder / f"snap{k}{ext[1]}")
            layer = create(fmt, paths[-1], None, DiskType.DIFFERENCING, parent=opened[-1])
        for index, first, count, fill in writes:
            if min(index, layers - 1) == k:
                count = min(count, SECTORS - first)
                layer.write(first * 512, bytes([fill]) * (count * 512))
        layer.flush()
        opened.append(layer)
    for layer in opened:
        layer.close()
    return paths, bytearray(read_all(paths[-1]))


#: More examples locally with VHDMEND_PROPERTY_EXAMPLES=200.
EXAMPLES = int(os.environ.get("VHDMEND_PROPERTY_EXAMPLES", "12"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["vhd", "vhdx"]), layers=st.integers(1, 4), writes=writes_st,
       operation=st.sampled_from(OPERATIONS))
def test_operations_preserve_content(fmt: str, layers: int, writes: list[tuple[int, int, int,
                                                                                int]],
                                     operation: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths, ref = build(folder, fmt, layers, writes)
        model = _model(layers, writes)
        assert ref == model  # the reader agrees with the in-memory model
        kind, _, variant = operation.partition("-")
        if kind == "merge" and layers < 2:
            kind, variant = "compact", "top"
        if kind == "remediate":
            ops.prepare("remediate", str(paths[-1]), type=variant, delete=True).run()
            result = paths[0]
        elif kind == "merge":
            into = str(paths[0]) if variant == "base" else None
            ops.prepare("merge", str(paths[-1]), into=into, delete=True).run()
            result = paths[0] if variant == "base" else paths[-2]
        elif kind == "compact":
            ops.prepare("compact", str(paths[-1])).run()
            result = paths[-1]
        else:
            out = folder / "out.raw"
            ops.prepare("convert", str(paths[-1]), str(out), format="raw").run()
            assert out.read_bytes() == model
            return
        assert read_all(result) == model


def _model(layers: int, writes: list[tuple[int, int, int, int]]) -> bytearray:
    """What the chain must read: writes applied oldest layer first, in order within one."""
    ref = bytearray(SIZE)
    for _layer, first, count, fill in sorted(writes, key=lambda w: min(w[0], layers - 1)):
        count = min(count, SECTORS - first)
        ref[first * 512:(first + count) * 512] = bytes([fill]) * (count * 512)
    return ref
