"""The VHDX log: replay of real dirty logs, our log writer, and kills at every syscall of a
BAT update and of a replay (each prefix must read as the old or the new state)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import vhdlib.chain as chain
from vhdlib import vhdx
from vhdlib.formats import open_layer
from vhdlib.vhdx import log as vhdx_log
from vhdlib.vhdx import structs as S

MiB = 1 << 20


class Recorder:
    """Records pwrite/ftruncate (and fsync points) while performing them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fd_path: str) -> None:
        self.ops: list[tuple[str, Any, int]] = []
        real_pwrite, real_trunc = os.pwrite, os.ftruncate
        self.path = fd_path

        def pwrite(fd: int, data: Any, off: int) -> int:
            if os.readlink(f"/proc/self/fd/{fd}") == self.path:
                self.ops.append(("pwrite", bytes(data), off))
            return real_pwrite(fd, data, off)

        def ftruncate(fd: int, size: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}") == self.path:
                self.ops.append(("truncate", None, size))
            real_trunc(fd, size)

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "ftruncate", ftruncate)


def _apply(path: Path, ops: list[tuple[str, Any, int]], torn: int | None = None) -> None:
    """Apply ops to ``path``; ``torn`` bytes of one more pwrite when given."""
    fd = os.open(path, os.O_RDWR)
    try:
        for kind, data, arg in ops:
            if kind == "pwrite":
                os.pwrite(fd, data if torn is None else data[:torn], arg)
            else:
                os.ftruncate(fd, arg)
    finally:
        os.close(fd)


def _content(path: Path, size: int) -> bytes:
    with chain.open(str(path)) as disk:
        return disk.read(0, size)


def _prefix_states(ops: list[tuple[str, Any, int]]):
    """Every prefix, plus torn halves of each pwrite (sector-sized tears)."""
    for k in range(len(ops) + 1):
        yield ops[:k], None
        if k < len(ops) and ops[k][0] == "pwrite" and len(ops[k][1]) > 4096:
            yield [*ops[:k], ops[k]], 4096


@pytest.mark.parametrize("differencing", [False, True])
def test_kill_at_every_syscall_of_a_bat_update(tmp_path, monkeypatch, differencing):
    size = 16 * MiB
    base = tmp_path / "base.vhdx"
    with vhdx.create(str(base), size, "dynamic", block_size=MiB) as lay:
        lay.write(0, b"\x01" * MiB)
    target = base
    if differencing:
        with open_layer(str(base)) as parent:
            vhdx.create(str(tmp_path / "c.avhdx"), size, "differencing", parent=parent,
                        block_size=MiB).close()
        target = tmp_path / "c.avhdx"
    pristine = tmp_path / "pristine"
    shutil.copyfile(target, pristine)
    old = _content(target, size)
    # When: a write to new blocks (a BAT update, and bitmap blocks for a differencing disk)
    rec = Recorder(monkeypatch, str(target))
    with open_layer(str(target), writable=True) as lay:
        lay.write(3 * MiB + 4096, b"\x02" * 8192)
        lay.write(6 * MiB, b"\x03" * MiB)
    monkeypatch.undo()
    new = _content(target, size)
    assert old != new and len(rec.ops) > 8
    # Then: every prefix (and torn write) opens read-only and writable to old or new
    for i, (ops, torn) in enumerate(_prefix_states(rec.ops)):
        work = tmp_path / f"state{i}{target.suffix}"
        shutil.copyfile(pristine, work)
        _apply(work, ops[:-1] if torn else ops)
        if torn:
            _apply(work, ops[-1:], torn)
        got = _content(work, size)
        assert got in (old, new), f"state {i}: neither old nor new"
        with open_layer(str(work), writable=True) as lay:
            assert lay.header.log_guid == S.ZERO_GUID  # replayed at open if dirty
        assert _content(work, size) == got
        work.unlink()


def test_kill_during_replay(tmp_path, monkeypatch):
    size = 16 * MiB
    path = tmp_path / "d.vhdx"
    with vhdx.create(str(path), size, "dynamic", block_size=MiB) as lay:
        lay.write(0, b"\x01" * MiB)
    pristine = tmp_path / "pristine.vhdx"
    shutil.copyfile(path, pristine)
    rec = Recorder(monkeypatch, str(path))
    with open_layer(str(path), writable=True) as lay:
        lay.write(5 * MiB, b"\x05" * MiB)
    monkeypatch.undo()
    new = _content(path, size)
    # Find the dirty state: the log entry is written but not yet applied to the BAT.
    log_write = next(i for i, (k, d, off) in enumerate(rec.ops)
                     if k == "pwrite" and MiB <= off < 2 * MiB)
    dirty = tmp_path / "dirty.vhdx"
    shutil.copyfile(pristine, dirty)
    _apply(dirty, rec.ops[:log_write + 1])
    with open_layer(str(dirty)) as lay:
        assert lay.info()["log"].startswith("dirty")
    assert _content(dirty, size) == new
    # Record the replay of that dirty file, then kill it at every step.
    replayed = tmp_path / "replayed.vhdx"
    shutil.copyfile(dirty, replayed)
    rec2 = Recorder(monkeypatch, str(replayed))
    open_layer(str(replayed), writable=True).close()
    monkeypatch.undo()
    assert rec2.ops
    for i, (ops, torn) in enumerate(_prefix_states(rec2.ops)):
        work = tmp_path / f"r{i}.vhdx"
        shutil.copyfile(dirty, work)
        _apply(work, ops[:-1] if torn else ops)
        if torn:
            _apply(work, ops[-1:], torn)
        assert _content(work, size) == new, f"replay state {i}"
        work.unlink()


def test_stale_entries_with_other_guids_are_ignored(real_image):
    path = real_image("qemu-iotests/iotest-dirtylog-10G-4M.vhdx")
    fd = os.open(path, os.O_RDONLY)
    try:
        h = S.Header.parse(os.pread(fd, 4096, S.HEADER2_OFFSET))

        def read(off: int, n: int) -> bytes:
            return os.pread(fd, n, off)

        seq = vhdx_log.find_active_sequence(read, h.log_offset, h.log_length, h.log_guid)
        assert [e.header.sequence_number for e in seq] == [7]
        assert [off for off, _ in seq[0].writes] == [0x200000]
    finally:
        os.close(fd)


def test_discutils_log_sequence(real_image):
    path = real_image("discutils/vhdx-log-replay.vhdx")
    with open_layer(str(path)) as lay:
        assert lay.info()["header_sequence_numbers"] == [8, 9]
        fd = lay.fd
        h = lay.header
        seq = vhdx_log.find_active_sequence(lambda o, n: os.pread(fd, n, o), h.log_offset,
                                            h.log_length, h.log_guid)
        # Five contiguous entries (MANIFEST section 5); the head's Tail (20480) says only
        # the last two still need replaying (2.3.3).
        entries = [vhdx_log.read_entry(lambda o, n: os.pread(fd, n, o), h.log_offset,
                                       h.log_length, pos, h.log_guid)
                   for pos in (0, 4096, 12288, 20480, 28672)]
        nums = [e.header.sequence_number for e in entries if e is not None]
        assert nums == list(range(nums[0], nums[0] + 5))
        assert entries[0] is not None and entries[0].header.descriptor_count == 0
        assert [e.position for e in seq] == [20480, 28672]
        assert seq[-1].header.tail == 20480
        assert seq[-1].header.flushed_file_offset == 36 * MiB


def test_log_writer_wraps_and_entries_stay_valid(tmp_path):
    path = tmp_path / "w.vhdx"
    with vhdx.create(str(path), 1 << 30, "dynamic", block_size=MiB) as lay:
        # Enough separate flushes to go round the 1 MiB log several times.
        for i in range(300):
            lay.write(i * 2 * MiB, b"\x07" * 4096)
            lay.flush()
        w = lay._log_writer
        assert w is not None and w.sequence_number > 300
    with chain.open(str(path)) as disk:
        assert disk.read(298 * 2 * MiB, 4096) == b"\x07" * 4096
        assert disk.top.check() == []
