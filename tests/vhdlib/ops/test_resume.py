"""Resume after a crash at any write: the result is bit-identical to an uninterrupted run.

In-process crashes: a write of the operation raises a BaseException after N writes, so
nothing is flushed or cleaned up (like ``kill -9`` between two syscalls). The CLI tests
(tests/vhdmend/test_crash.py) do the same with real SIGKILLs.
"""

from __future__ import annotations

import os
import random
import shutil
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.chains import build_chain, file_sha256, read_all
from vhdlib import journal, ops
from vhdlib.errors import ChangedInputError
from vhdlib.layer import Layer

IDS = {"uuid": "0f0e0d0c-0b0a-0908-0706-050403020100", "timestamp": 1750000000}


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs in the operation."""


def crash_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Make the process 'die' at the ``writes``-th low-level write of any layer."""
    count = {"n": 0}
    real_pwritev = os.pwritev
    real_pwrite = os.pwrite

    def tick() -> None:
        count["n"] += 1
        if count["n"] > writes:
            raise Crash()

    def pwritev(fd: int, bufs: Any, offset: int, *a: Any) -> int:
        tick()
        return real_pwritev(fd, bufs, offset, *a)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        tick()
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    monkeypatch.setattr(os, "pwrite", pwrite)


def run_with_crashes(monkeypatch: pytest.MonkeyPatch, op: ops.Operation, seed: int,
                     max_crashes: int = 6) -> int:
    rnd = random.Random(seed)
    crashes = 0
    while True:
        crash_after(monkeypatch, rnd.randint(0, 5))
        try:
            op.run(chunk_bytes=256 << 10)
            monkeypatch.undo()
            return crashes
        except Crash:
            crashes += 1
        finally:
            monkeypatch.undo()
        if crashes >= max_crashes:
            op = ops.resume(op.journal_path)
            op.run(chunk_bytes=256 << 10)
            return crashes
        op = ops.resume(op.journal_path)


def _twin(chain_dir: Path, tmp: Path, name: str) -> Path:
    dest = tmp / name
    shutil.copytree(chain_dir, dest)
    return dest


@pytest.mark.parametrize("kind", ["convert-fixed", "convert-dynamic", "remediate", "merge",
                                  "compact"])
def test_crash_and_resume_is_bit_identical(tmp_path: Path, fmt: str, kind: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    chain = build_chain(src, fmt, size=24 << 20, writes=30, zero_blocks=4,
                        children=0 if kind == "compact" else 3)
    a = _twin(src, tmp_path, "a")
    b = _twin(src, tmp_path, "b")

    def prepare(folder: Path) -> ops.Operation:
        newest = folder / chain.newest.name
        base = folder / chain.base.name
        if kind.startswith("convert"):
            return ops.prepare("convert", str(newest), str(folder / f"out.{fmt}"),
                               type=kind.split("-")[1], **IDS)
        if kind == "remediate":
            return ops.prepare("remediate", str(newest), delete=True, **IDS)
        if kind == "merge":
            return ops.prepare("merge", str(newest), into=str(base), delete=True)
        return ops.prepare("compact", str(base))

    # Uninterrupted run in a
    prepare(a).run(chunk_bytes=256 << 10)
    # Crashing runs in b, resumed each time from the journal
    crashes = run_with_crashes(monkeypatch, prepare(b), seed=zlib.crc32(kind.encode()))
    assert crashes >= 1
    files_a = sorted(p.name for p in a.iterdir() if p.is_file())
    files_b = sorted(p.name for p in b.iterdir() if p.is_file())
    assert files_a == files_b
    for name in files_a:
        assert file_sha256(a / name) == file_sha256(b / name), name
    result = a / (f"out.{fmt}" if kind.startswith("convert") else chain.base.name)
    assert read_all(result) == chain.ref


def test_resume_refuses_changed_input(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=16 << 20, children=2)
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhd"))
    state = op.state.to_dict()
    state["phase"] = "copy"
    journal.save(op.journal_path, state)
    # The guest wrote to its newest snapshot meanwhile.
    from vhdlib.formats import open_layer
    layer: Layer
    with open_layer(str(chain.newest), writable=True) as layer:
        layer.write(0, b"\x01" * 512)
        layer.flush()
    resumed = ops.resume(op.journal_path)
    with pytest.raises(ChangedInputError, match=chain.newest.name):
        resumed.run()


def test_stale_fence_is_refused(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=8 << 20, children=1)
    op = ops.prepare("remediate", str(chain.newest), delete=True)
    with pytest.raises(Exception, match="fence"):
        op.run(fence=5, pause=lambda: True) and None
        ops.resume(op.journal_path).run(fence=4)
    # The newer fence may continue.
    ops.resume(op.journal_path).run(fence=6)
    assert read_all(chain.base) == chain.ref


def test_frozen_executor_cannot_roll_the_journal_back(tmp_path: Path) -> None:
    # Given executor A (fence 1) paused mid-copy, then B took over with fence 2
    chain = build_chain(tmp_path, "vhd", size=16 << 20, children=2)
    a = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhd"))
    a.run(fence=1, pause=lambda: True, chunk_bytes=64 << 10)
    b = ops.resume(a.journal_path)
    b.run(fence=2, pause=lambda: True, chunk_bytes=64 << 10)
    cursor_b = journal.load(a.journal_path)["cursor"]
    # When A wakes and tries to checkpoint its stale state
    with pytest.raises(Exception, match="fence"):
        a.checkpoint()
    # Then B's checkpoint stands
    assert journal.load(a.journal_path)["cursor"] == cursor_b
    assert journal.load(a.journal_path)["fence"] == 2
