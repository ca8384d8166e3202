"""Creating and writing VHDX: what qemu-img and libvhdi read back, finalize, block store,
and a property test against an in-memory model."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vhdlib.chain as chain
from tests.conftest import require_tool
from vhdlib import vhdx
from vhdlib.errors import UsageError
from vhdlib.formats import open_layer
from vhdlib.layer import DiskType

MiB = 1 << 20


def _qemu_check(path: Path) -> None:
    qemu = require_tool("qemu-img")
    r = subprocess.run([qemu, "check", "-f", "vhdx", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No errors" in r.stdout


def _qemu_raw(path: Path, tmp: Path) -> bytes:
    qemu = require_tool("qemu-img")
    out = tmp / (path.name + ".raw")
    subprocess.run([qemu, "convert", "-f", "vhdx", "-O", "raw", str(path), str(out)],
                   check=True)
    return out.read_bytes()


def _libvhdi(path: Path, size: int, parent: Path | None = None) -> bytes:
    pyvhdi = pytest.importorskip("pyvhdi")
    f = pyvhdi.file()
    f.open(str(path))
    if parent is not None:
        p = pyvhdi.file()
        p.open(str(parent))
        f.set_parent(p)
    return bytes(f.read_buffer_at_offset(size, 0))


def _fill(layer: vhdx.VhdxLayer) -> None:
    layer.write(0, b"\xa5" * (3 * MiB))                 # spans two 2 MiB blocks
    layer.write(10 * MiB + 512, b"\x11" * 1024)         # partial, unaligned in block
    layer.write(15 * MiB, os.urandom(2 * MiB))          # crosses a block boundary
    layer.write_zeroes(20 * MiB, 4 * MiB)


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_create_write_read_by_qemu_and_libvhdi(tmp_path, kind):
    path = tmp_path / f"{kind}.vhdx"
    with vhdx.create(str(path), 64 * MiB, kind, block_size=2 * MiB) as layer:
        assert layer.disk_type is DiskType(kind)
        _fill(layer)
    _qemu_check(path)
    with chain.open(str(path)) as disk:
        data = disk.read(0, disk.virtual_size)
        assert data[:3 * MiB] == b"\xa5" * (3 * MiB)
        assert disk.top.check() == []
    assert _qemu_raw(path, tmp_path) == data
    assert _libvhdi(path, 64 * MiB) == data


def test_fixed_is_fully_allocated_unless_sparse(tmp_path):
    with vhdx.create(str(tmp_path / "f.vhdx"), 64 * MiB, "fixed", block_size=8 * MiB) as lay:
        assert lay.allocated_bytes >= 64 * MiB
        assert lay.info()["bat_states"] == {"fully_present": 8}
    with vhdx.create(str(tmp_path / "s.vhdx"), 64 * MiB, "fixed", sparse=True) as lay:
        assert lay.allocated_bytes < 16 * MiB


def test_differencing_chain_read_by_libvhdi(tmp_path):
    base_path = tmp_path / "base.vhdx"
    with vhdx.create(str(base_path), 64 * MiB, "dynamic", block_size=2 * MiB) as base:
        base.write(0, b"\x01" * (5 * MiB))
    with open_layer(str(base_path)) as base:
        child = vhdx.create(str(tmp_path / "child.avhdx"), 64 * MiB, "differencing",
                            parent=base, block_size=2 * MiB)
    with child:
        child.write(3 * 512, b"\x02" * 1024)
        child.write(4 * MiB, b"\x03" * (2 * MiB))
        child.write_zeroes(8 * MiB, 2 * MiB)
        child.write(1 * MiB, b"\x04" * 4096)      # second bitmap write into the same block
        loc = dict(child.parent_locator.entries)  # type: ignore[union-attr]
        assert loc["relative_path"] == ".\\base.vhdx"
        assert loc["absolute_win32_path"].startswith("Z:\\")
    with chain.open(str(tmp_path / "child.avhdx")) as disk:
        assert len(disk.layers) == 2
        data = disk.read(0, disk.virtual_size)
        assert data[:1536] == b"\x01" * 1536 and data[1536:2560] == b"\x02" * 1024
        assert data[1 * MiB:1 * MiB + 4096] == b"\x04" * 4096
        assert data[4 * MiB:5 * MiB] == b"\x03" * MiB
        assert data[8 * MiB:10 * MiB] == bytes(2 * MiB)
        assert disk.top.check() == []
    assert _libvhdi(tmp_path / "child.avhdx", 64 * MiB, base_path) == data


def test_4096_byte_sectors(tmp_path):
    path = tmp_path / "4k.vhdx"
    with vhdx.create(str(path), 32 * MiB, "dynamic", block_size=1 * MiB,
                     logical_sector_size=4096) as lay:
        with pytest.raises(UsageError):
            lay.write(512, b"x" * 512)
        lay.write(4096, b"y" * 4096)
    with chain.open(str(path)) as disk:
        assert disk.logical_sector_size == 4096
        assert disk.read(4096, 4096) == b"y" * 4096
        data = disk.read(0, disk.virtual_size)
    # qemu refuses logical sectors other than 512 ("Operation not supported"); libvhdi reads.
    assert _libvhdi(path, 32 * MiB) == data


@pytest.mark.parametrize(("kw", "size"), [
    ({"block_size": 3 * MiB}, 64 * MiB),
    ({"block_size": 512 * MiB}, 64 * MiB),
    ({"logical_sector_size": 1024}, 64 * MiB),
    ({}, 1000),
    ({}, 0),
    ({}, 65 << 40),
])
def test_create_refuses_bad_parameters(tmp_path, kw, size):
    with pytest.raises(UsageError):
        vhdx.create(str(tmp_path / "x.vhdx"), size, "dynamic", **kw)
    assert not (tmp_path / "x.vhdx").exists()


def test_create_refuses_existing_target_and_missing_parent(tmp_path):
    target = tmp_path / "exists.vhdx"
    target.write_bytes(b"keep")
    with pytest.raises(UsageError):
        vhdx.create(str(target), 64 * MiB, "dynamic")
    assert target.read_bytes() == b"keep"
    with pytest.raises(UsageError):
        vhdx.create(str(tmp_path / "c.avhdx"), 64 * MiB, "differencing")


def test_guids_renewed_on_write(tmp_path):
    path = tmp_path / "g.vhdx"
    fixed_ids = [uuid.UUID(int=i) for i in range(1, 4)]
    lay = vhdx.create(str(path), 64 * MiB, "dynamic", file_write_guid=fixed_ids[0],
                      data_write_guid=fixed_ids[1], virtual_disk_id=fixed_ids[2])
    assert lay.link_id == fixed_ids[1]
    lay.close()
    with open_layer(str(path), writable=True) as lay:
        assert lay.link_id == fixed_ids[1]  # opening writable changes nothing
        lay.write(0, b"z" * 512)
        assert lay.link_id != fixed_ids[1]
        assert lay.header.file_write_guid != fixed_ids[0]
        assert lay.virtual_disk_id == fixed_ids[2]


def _run(path: Path, seed: bytes, kill_after: int | None) -> str:
    """Create, write 6 chunks, finalize; optionally 'kill' (close the fd raw) and resume."""
    counter = iter(range(1, 1 << 30))

    def gf() -> uuid.UUID:
        return uuid.uuid4()

    ids = {"file_write_guid": uuid.UUID(int=11), "data_write_guid": uuid.UUID(int=12),
           "virtual_disk_id": uuid.UUID(int=13)}
    lay = vhdx.create(str(path), 64 * MiB, "dynamic", block_size=2 * MiB, guid_factory=gf,
                      **ids)
    chunks = [(i * 5 * MiB + 512 * i, bytes([i + 1]) * (3 * MiB)) for i in range(6)]
    for n, (off, data) in enumerate(chunks):
        lay.write(off, data)
        if kill_after is not None and n == kill_after:
            # kill -9 before this chunk's checkpoint: unflushed, no clean-close header update
            os.close(lay.fd)
            lay._fd = -1
            lay = open_layer(str(path), writable=True)  # type: ignore[assignment]
            lay.write(off, data)  # the resumed run redoes the chunk after the checkpoint
        lay.flush()  # checkpoint
    next(counter)
    lay.finalize(seed)
    lay.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_finalize_is_bit_identical_after_resume(tmp_path):
    a = _run(tmp_path / "a.vhdx", b"seed", None)
    b = _run(tmp_path / "b.vhdx", b"seed", 3)
    c = _run(tmp_path / "c.vhdx", b"other", None)
    assert a == b != c
    _qemu_check(tmp_path / "b.vhdx")
    # finalize again (resume after a kill during finalize) changes nothing
    with open_layer(str(tmp_path / "a.vhdx"), writable=True) as lay:
        lay.finalize(b"seed")  # type: ignore[attr-defined]
    assert hashlib.sha256((tmp_path / "a.vhdx").read_bytes()).hexdigest() == a


def test_block_store_drop_move_truncate(tmp_path):
    path = tmp_path / "bs.vhdx"
    with vhdx.create(str(path), 16 * MiB, "dynamic", block_size=1 * MiB) as lay:
        lay.write(0, b"\x01" * MiB)
        lay.write(2 * MiB, bytes(MiB))          # allocated but all zero
        lay.write(5 * MiB, b"\x05" * MiB)
        lay.flush()
        store = lay.block_store()
        assert store is not None and store.block_count == 16
        before = chain.Disk([lay]).read(0, 16 * MiB)
        assert store.droppable(2) and not store.droppable(0)
        hole = store.slot_offset(2)
        store.drop(2)
        store.drop(2)  # idempotent
        assert store.slot_offset(2) is None
        store.move(5, hole)
        store.move(5, hole)  # idempotent
        assert store.slot_offset(5) == hole
        store.truncate_after(max(store.slot_offset(i) or 0 for i in range(16)) + MiB)
        assert chain.Disk([lay]).read(0, 16 * MiB) == before
        assert lay.check() == []
    _qemu_check(path)


_OPS = st.lists(st.tuples(st.sampled_from(["write", "zero"]), st.integers(0, 63),
                          st.integers(1, 48), st.integers(0, 255)), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, differencing=st.booleans())
def test_random_writes_match_a_model(tmp_path_factory, ops, differencing):
    tmp = tmp_path_factory.mktemp("prop")
    size = 4 * MiB
    sector = 64 * 1024  # model granularity: 64 KiB units in a 4 MiB disk, 1 MiB blocks
    base_path = tmp / "base.vhdx"
    model = bytearray(size)
    with vhdx.create(str(base_path), size, "dynamic", block_size=MiB) as base:
        if differencing:
            pattern = bytes(range(256)) * (size // 256)
            base.write(0, pattern)
            model[:] = pattern
    top_path = base_path
    if differencing:
        with open_layer(str(base_path)) as base:
            top = vhdx.create(str(tmp / "top.avhdx"), size, "differencing", parent=base,
                              block_size=MiB)
        top_path = tmp / "top.avhdx"
    else:
        top = open_layer(str(base_path), writable=True)  # type: ignore[assignment]
    with top:
        for kind, start, count, byte in ops:
            start_b = start * sector
            n = min(count * sector // 8, size - start_b)  # 8 KiB granularity lengths
            if kind == "write":
                top.write(start_b, bytes([byte]) * n)
                model[start_b:start_b + n] = bytes([byte]) * n
            else:
                top.write_zeroes(start_b, n)
                model[start_b:start_b + n] = bytes(n)
    with chain.open(str(top_path)) as disk:
        assert disk.read(0, size) == bytes(model)
        assert disk.top.check() == []
