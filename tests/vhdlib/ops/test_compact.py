"""compact: empty blocks dropped, tail blocks moved into holes, file shrinks."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vhdlib
from tests.chains import build_chain, read_all
from tests.vhdlib.ops.test_resume import Crash
from vhdlib import journal, ops
from vhdlib.errors import ChangedInputError, UsageError
from vhdlib.formats import open_layer


def test_compact_dynamic_drops_zero_blocks_and_shrinks(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, children=0, zero_blocks=3, writes=10)
    before = os.path.getsize(chain.base)
    result = ops.prepare("compact", str(chain.base)).run()
    assert result["dropped_blocks"] >= 3
    assert os.path.getsize(chain.base) < before
    assert read_all(chain.base) == chain.ref
    with open_layer(str(chain.base)) as layer:
        assert [p for p in layer.check() if p.code != "warning"] == []


def test_compact_differencing_keeps_present_zeros(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, children=1, writes=10)
    # A child block holding only present zeros hides parent data: it must stay.
    with open_layer(str(chain.newest), writable=True) as child:
        child.write(0, bytes(4096))
        child.flush()
    chain.ref[0:4096] = bytes(4096)
    ops.prepare("compact", str(chain.newest)).run()
    assert read_all(chain.newest) == chain.ref


def test_compact_fixed_is_refused(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", children=0, size=8 << 20)
    fixed = tmp_path / "fixed.vhd"
    ops.prepare("convert", str(chain.base), str(fixed), type="fixed").run()
    with pytest.raises(UsageError, match="fixed"):
        ops.prepare("compact", str(fixed))


def test_compact_moves_tail_blocks_into_holes(tmp_path: Path) -> None:
    from tests.chains import create
    from vhdlib.layer import DiskType
    path = tmp_path / "holes.vhd"
    bs = 2 << 20
    ref = bytearray(16 * bs)
    with create("vhd", path, 16 * bs, DiskType.DYNAMIC) as layer:
        for i in range(16):
            data = bytes(bs) if i % 2 == 0 else bytes([i]) * bs
            layer.write(i * bs, data)
            ref[i * bs:(i + 1) * bs] = data
        layer.flush()
    result = ops.prepare("compact", str(path)).run()
    assert result["dropped_blocks"] == 8
    assert result["moved_blocks"] > 0
    with vhdlib.open(str(path)) as disk:
        assert disk.read(0, disk.virtual_size) == ref
    # 8 blocks of data remain: the file holds about 8 slots, not 16.
    assert os.path.getsize(path) < 9 * (bs + 4096) + (1 << 20)


def test_compact_when_every_block_is_empty(tmp_path: Path, fmt: str) -> None:
    from tests.chains import create
    from vhdlib.layer import DiskType
    path = tmp_path / f"empty.{fmt}"
    block = 1 << 20
    with create(fmt, path, 8 * block, DiskType.DYNAMIC, block_size=block) as layer:
        layer.write(0, bytes(4 * block))
        layer.flush()
    with create(fmt, tmp_path / f"fresh.{fmt}", 8 * block, DiskType.DYNAMIC,
                block_size=block) as fresh:
        fresh.flush()
    result = ops.prepare("compact", str(path)).run()
    assert result["status"] == "done"
    # No bigger than a freshly created disk, reading all zero, and clean.
    assert os.path.getsize(path) <= os.path.getsize(tmp_path / f"fresh.{fmt}")
    with open_layer(str(path)) as layer:
        assert [p.code for p in layer.check() if p.code != "warning"] == []
    assert read_all(path) == bytes(8 * block)


def test_compacting_a_parent_keeps_its_children_reading(tmp_path: Path, fmt: str) -> None:
    # Compaction does not change what a disk reads, so its children still resolve to it
    # (a VHDX keeps its DataWriteGuid, the id children link to).
    chain = build_chain(tmp_path, fmt, children=2, zero_blocks=3, writes=10)
    result = ops.prepare("compact", str(chain.base)).run()
    assert result["dropped_blocks"] >= 3
    assert read_all(chain.newest) == chain.ref


def test_resume_refuses_a_disk_that_grew_while_paused(tmp_path: Path, fmt: str) -> None:
    """The move list and the new end were worked out from the file as the drop phase left
    it: a block someone allocated since would be cut off by the truncation."""
    # Given a compaction paused after its drop phase
    chain = build_chain(tmp_path, fmt, children=0, zero_blocks=3, writes=10)
    op = ops.prepare("compact", str(chain.base))
    op.run(pause=lambda: op.state.phase == "move")
    assert op.state.moves and journal.load(op.journal_path)["phase"] == "move"
    # When a writer puts data where a dropped block was (a new block at the file's end)
    with open_layer(str(chain.base)) as layer:
        store = layer.block_store()
        assert store is not None
        free = next(i for i in range(store.block_count) if store.slot_offset(i) is None)
        at = free * store.block_size
    with open_layer(str(chain.base), writable=True) as layer:
        layer.write(at, b"\x77" * 4096)
        layer.flush()
    # Then the resume is refused, and the data stays
    with pytest.raises(ChangedInputError, match=r"size|uuid"):
        ops.resume(op.journal_path).run()
    with vhdlib.open(str(chain.base)) as disk:
        assert disk.read(at, 4096) == b"\x77" * 4096


def test_run_refuses_a_disk_changed_since_the_plan(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, children=0, zero_blocks=3, writes=10)
    op = ops.prepare("compact", str(chain.base))
    st = chain.base.stat()
    os.utime(chain.base, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ChangedInputError, match="mtime"):
        op.run()
    assert not os.path.exists(op.journal_path)


def test_resume_after_a_kill_once_done(tmp_path: Path, fmt: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed while the journal already says done (the result is being worked out): the
    file is compacted, truncated and sealed, and the resume just finishes."""
    from vhdlib.ops.compact import CompactOperation

    chain = build_chain(tmp_path, fmt, children=0, zero_blocks=3, writes=10)
    op = ops.prepare("compact", str(chain.base))

    def killed(self: CompactOperation) -> None:
        raise Crash()

    monkeypatch.setattr(CompactOperation, "result", killed)
    with pytest.raises(Crash):
        op.run()
    monkeypatch.undo()
    assert journal.load(op.journal_path)["phase"] == "done"
    assert ops.resume(op.journal_path).run()["status"] == "done"
    assert read_all(chain.base) == chain.ref


def _disk(path: Path, fmt: str, size: int, block: int, writes: dict[int, bytes]) -> None:
    """A dynamic disk with ``writes`` (block index: its bytes) allocated in that order, its
    bytes (and holes) the same each time: the ids are fixed."""
    from uuid import UUID

    from vhdlib import vhd, vhdx
    from vhdlib.layer import DiskType, Layer
    ids = iter(UUID(int=n) for n in range(1, 100))
    layer: Layer = (vhd.create(str(path), size, DiskType.DYNAMIC, block_size=block,
                               uuid=UUID(int=7), timestamp=5) if fmt == "vhd" else
                    vhdx.create(str(path), size, DiskType.DYNAMIC, block_size=block,
                                guid_factory=lambda: next(ids), file_write_guid=UUID(int=101),
                                data_write_guid=UUID(int=102), virtual_disk_id=UUID(int=103)))
    with layer:
        for i, data in writes.items():
            layer.write(i * block, data)
        layer.flush()


def _holes(path: Path, fmt: str, blocks: int, block: int) -> bytes:
    """Even blocks allocated zeros (droppable), odd ones data; returns what it reads."""
    writes = {i: bytes(block) if i % 2 == 0 else bytes([i]) * block for i in range(blocks)}
    _disk(path, fmt, blocks * block, block, writes)
    return b"".join(writes.values())


def test_a_kill_before_the_checkpoint_reports_what_an_uninterrupted_run_does(
        tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed once a chunk's drops are durable but before its checkpoint: the redone chunk
    finds those blocks dropped already, and the result must count them all the same (a
    resumed job is indistinguishable from an uninterrupted one)."""
    block, chunk = 1 << 20, 4 << 20
    path = tmp_path / f"holes.{fmt}"
    ref = _holes(path, fmt, 24, block)
    original = path.read_bytes()
    # Given the result and bytes of an uninterrupted run
    want = ops.prepare("compact", str(path)).run(chunk_bytes=chunk)
    want_bytes = path.read_bytes()
    path.unlink()
    assert _holes(path, fmt, 24, block) == ref and path.read_bytes() == original
    # When a run dies at its second checkpoint in the drop phase (two drops made durable)
    op = ops.prepare("compact", str(path))
    real_save = journal.save
    saves = {"n": 0}

    def save(where: str, state: dict) -> None:
        if state["phase"] == "drop" and state["cursor"]:
            saves["n"] += 1
            if saves["n"] == 2:
                raise Crash()
        real_save(where, state)

    monkeypatch.setattr(journal, "save", save)
    with pytest.raises(Crash):
        op.run(chunk_bytes=chunk)
    monkeypatch.undo()
    # Then the resumed run reports the same figures and leaves the same bytes
    got = ops.resume(op.journal_path).run(chunk_bytes=chunk)
    assert want["dropped_blocks"] == 12
    assert got == want
    assert path.read_bytes() == want_bytes
    assert read_all(path) == ref



#: What reaches a file: a kill -9 stand-in makes these fail from some call on.
_SYSCALLS = ("pwrite", "pwritev", "fsync", "ftruncate")
_REAL = {name: getattr(os, name) for name in _SYSCALLS}


def _die_once(monkeypatch: pytest.MonkeyPatch, when: Callable[[str, tuple[Any, ...]], bool]
              ) -> None:
    """kill -9 stand-in: the process's writes, fsyncs and truncations are made until
    ``when(name, args)`` holds for one (made too); each one after it raises Crash, so
    nothing after reaches the file (not even what a ``finally`` would flush)."""
    dead = {"yes": False}
    for name in _SYSCALLS:
        def call(*a: Any, _real: Any = _REAL[name], _name: str = name) -> Any:
            if dead["yes"]:
                raise Crash()
            dead["yes"] = when(_name, a)
            return _real(*a)

        monkeypatch.setattr(os, name, call)


def test_vhdx_killed_once_the_file_shrank_resumes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed once the truncate phase shrank the file, before the final headers: the log
    must be clean by then, since its entries name the longer file as flushed and replay
    refuses a shorter one (MS-VHDX 2.3.3); the resume opens the file and finishes."""
    block = 1 << 20
    path = tmp_path / "holes.vhdx"
    ref = _holes(path, "vhdx", 8, block)
    want = ops.prepare("compact", str(path)).run()
    want_bytes = path.read_bytes()
    path.unlink()
    _holes(path, "vhdx", 8, block)
    op = ops.prepare("compact", str(path))
    _die_once(monkeypatch, lambda name, a: name == "ftruncate" and a[1] < os.fstat(a[0]).st_size)
    with pytest.raises(Crash):
        op.run()
    monkeypatch.undo()
    assert os.path.getsize(path) < len(want_bytes) + 4 * block  # it did shrink
    assert ops.resume(op.journal_path).run() == want
    assert path.read_bytes() == want_bytes
    assert read_all(path) == ref


def test_vhdx_bat_changes_of_a_chunk_share_log_entries(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's drops (and moves) reach the file in one flush: one log entry, or as few as
    the log holds (made to hold one BAT page here), not one a block; a kill at any write,
    fsync or truncation resumes to the bytes and result of an uninterrupted run."""
    from vhdlib.vhdx.log import LogWriter
    block, page = 1 << 20, 512  # blocks per 4 KiB BAT page (8-byte entries, MS-VHDX 2.5)
    # Given two droppable blocks in each of two BAT pages, then two of data in each (all
    # four move into the holes)
    writes = {p * page + k: bytes(block) for p in range(2) for k in (1, 2)}
    writes.update({p * page + k: bytes([p + k]) * block for p in range(2) for k in (3, 4)})
    path = tmp_path / "pages.vhdx"
    _disk(path, "vhdx", (page + 5) * block, block, writes)
    original = tmp_path / "original.vhdx"
    path.rename(original)
    monkeypatch.setattr(LogWriter, "max_sectors_per_entry", lambda self: 1)
    entries = {"n": 0}
    build_entry = LogWriter.build_entry

    def counted(self: LogWriter, *a: Any) -> bytes:
        entries["n"] += 1
        return build_entry(self, *a)

    monkeypatch.setattr(LogWriter, "build_entry", counted)
    shutil.copyfile(original, path)
    want = ops.prepare("compact", str(path)).run()
    want_bytes = path.read_bytes()
    assert (want["dropped_blocks"], want["moved_blocks"]) == (4, 4)
    # A page an entry: two for the drops, two for the moves (one a block: eight)
    assert entries["n"] == 4
    # When killed at the k-th call, for every k, and resumed
    calls = {"n": 0, "kill": 0}
    for name in _SYSCALLS:
        # fsync is a kill point but does nothing: a kill -9 loses no page cache, and the
        # hundred-odd runs below would wait for the disk some 4000 times.
        def dies(*a: Any, _real: Any = _REAL[name] if name != "fsync" else id) -> Any:
            calls["n"] += 1
            if calls["n"] > calls["kill"]:
                raise Crash()
            return _real(*a)

        monkeypatch.setattr(os, name, dies)
    killed = 0
    while True:
        shutil.copyfile(original, path)
        calls.update(n=0, kill=killed)
        op = ops.prepare("compact", str(path))
        try:
            op.run()
            break  # no kill: every call was passed
        except Crash:
            killed += 1
        calls["kill"] = 1 << 60
        # Then each resume ends as the uninterrupted run did (with no journal the run was
        # killed before it changed anything, or once it was done)
        if os.path.exists(op.journal_path):
            assert ops.resume(op.journal_path).run() == want, killed
        elif path.read_bytes() != want_bytes:
            assert path.read_bytes() == original.read_bytes(), killed
            assert ops.prepare("compact", str(path)).run() == want, killed
        assert path.read_bytes() == want_bytes, killed
    assert killed > 50
    with vhdlib.open(str(path)) as disk:
        assert [(e.offset, e.length) for e in disk.extents() if e.kind.value == "data"] \
            == [(i * block, block) for i in sorted(writes) if any(writes[i])]
        assert all(disk.read(i * block, block) == data for i, data in writes.items())
