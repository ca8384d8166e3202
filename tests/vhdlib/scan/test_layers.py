"""Per-layer figures: growth checked against an independent reading of the BAT, and the
predicted maximum against the file once every block is really written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import tmpfs
from tests.chains import build_chain, create
from tests.vhdlib.scan.bat import max_bytes as independent_max
from vhdlib.formats import open_layer
from vhdlib.layer import DiskType
from vhdlib.scan.layers import measure

MiB = 1 << 20

volume = tmpfs.volume  # the fixture: real tmpfs volumes

REAL = ["dissect.hypervisor/dynamic.vhd", "dissect.hypervisor/dynamic.vhdx",
        "dissect.hypervisor/differencing.avhdx", "dissect.hypervisor/fixed.vhd",
        "dissect.hypervisor/fixed.vhdx", "qemu-iotests/iotest-dynamic-1G.vhdx",
        "qemu-iotests/hyperv2012r2-dynamic.vhd", "qemu-iotests/virtualpc-dynamic.vhd"]


@pytest.mark.parametrize("name", REAL)
def test_growth_of_real_images_matches_the_bat(real_image, name: str) -> None:  # type: ignore[no-untyped-def]
    path = str(real_image(name))
    fig = measure(path)
    assert not isinstance(fig, str), fig
    st = os.stat(path)
    assert fig.allocated_bytes == st.st_blocks * 512
    assert fig.file_size == st.st_size
    assert fig.max_bytes == independent_max(path)
    assert fig.growth_bytes == fig.max_bytes - fig.allocated_bytes


@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_growth_of_a_chain_matches_the_bat(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, size=40 * MiB, children=2, writes=12)
    for path in chain.paths:
        fig = measure(str(path))
        assert not isinstance(fig, str), fig
        assert fig.max_bytes == independent_max(str(path)), path
        assert fig.growth_bytes > 0  # 40 MiB disks with a dozen small writes each


@pytest.mark.parametrize("fmt,block", [("vhd", 2 * MiB), ("vhdx", MiB), ("vhdx", 32 * MiB)])
@pytest.mark.parametrize("kind", ["dynamic", "differencing"])
def test_max_bytes_is_what_the_file_takes_once_every_block_is_written(
        volume, fmt: str, block: int, kind: str) -> None:  # type: ignore[no-untyped-def]
    # On tmpfs st_blocks is exact (ext4 may keep a preallocated block past the end).
    tmp_path = volume("v", 256)
    size = 64 * MiB
    base = create(fmt, tmp_path / f"base.{fmt}", size, DiskType.DYNAMIC, block_size=block)
    target = base
    if kind == "differencing":
        target = create(fmt, tmp_path / f"child.a{fmt}", size, DiskType.DIFFERENCING,
                        parent=base, block_size=block)
    target.write(3 * MiB, b"x" * 4096)
    target.flush()
    path = target.path
    base.close()
    target.close()
    fig = measure(path)
    assert not isinstance(fig, str)
    predicted = fig.max_bytes
    with open_layer(path, writable=True) as layer:
        # Partial writes (sector 1 on): differencing blocks then need their bitmaps too.
        for off in range(0, size, MiB):
            layer.write(off + 512, b"y" * (MiB - 512))
        layer.flush()
    st = os.stat(path)
    after = measure(path)
    assert not isinstance(after, str)
    # Filling every block does not move the figure: it was the end state all along.
    assert after.max_bytes == predicted
    # The volume allocates what was predicted, less only what the log region has not
    # used yet (VHDX; under its 1 MiB) and, for a differencing VHDX, the 1 MiB sector
    # bitmap block vhdlib extends sparsely.
    slack = predicted - st.st_blocks * 512
    allowed = 0 if fmt == "vhd" else MiB * (2 if kind == "differencing" else 1)
    assert 0 <= slack <= allowed


def test_a_sparse_fixed_disk_can_still_grow(tmp_path: Path) -> None:
    from vhdlib import vhd
    layer = vhd.create(str(tmp_path / "fixed.vhd"), 16 * MiB, DiskType.FIXED, sparse=True)
    layer.close()
    fig = measure(str(tmp_path / "fixed.vhd"))
    assert not isinstance(fig, str)
    assert fig.type == "fixed"
    assert fig.max_bytes == 16 * MiB + 4096
    assert fig.growth_bytes == fig.max_bytes - fig.allocated_bytes > 15 * MiB


def test_an_unreadable_file_says_why(tmp_path: Path) -> None:
    p = tmp_path / "bad.vhd"
    p.write_bytes(b"conectix" + bytes(504))
    why = measure(str(p))
    assert isinstance(why, str) and why
