"""compact: empty blocks dropped, tail blocks moved into holes, file shrinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain, read_all
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
    from tests.vhdlib.ops.test_resume import Crash
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
