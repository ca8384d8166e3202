"""The operation engine: a typed, frozen state serialized to the same journal, and
read-only operations that run without a run lock or a journal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

import vhdlib
from tests.chains import build_chain
from vhdlib import journal, ops
from vhdlib.chain import Disk
from vhdlib.errors import Cancelled, OperationInProgressError
from vhdlib.extents import ExtentKind
from vhdlib.ops.operation import DONE, Operation, step
from vhdlib.ops.options import LENIENT, Option
from vhdlib.ops.state import CompactState, CopyState, MergeState, State
from vhdlib.plan import Plan

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ScanState(State):
    data_bytes: int = 0


class ScanOperation(Operation[ScanState]):
    """A read-only kind defined here: count the chain's data bytes, 1 MiB per cursor step."""

    kind: ClassVar[str] = "scan"
    phases = ("scan",)
    subject = Option("path", str, positional=True, required=True, form="path")
    options = (LENIENT,)
    state_type = ScanState
    read_only = True

    def __init__(self, state: ScanState, plan: Plan) -> None:
        super().__init__(state, plan)
        self.disk: Disk | None = None
        self.chunks = 0

    @classmethod
    def prepare(cls, path: str, *, lenient: bool = False) -> ScanOperation:
        with vhdlib.open(path) as disk:
            size = disk.virtual_size
        plan = Plan(cls.kind, path, [path], [])
        plan.steps.append(step("scan", "read the map", read=size))
        return cls(ScanState.fresh(cls.kind, path, {"lenient": lenient}), plan)

    def open_files(self) -> None:
        self.disk = vhdlib.open(self.state.target)

    def close_files(self) -> None:
        if self.disk is not None:
            self.disk.close()
            self.disk = None

    def chunk(self, budget: int, deadline: float) -> None:
        assert self.disk is not None
        self.chunks += 1
        pos = self.state.cursor
        n = min(MiB, self.disk.virtual_size - pos)
        data = sum(e.length for e in self.disk.extents(pos, n) if e.kind is ExtentKind.DATA)
        self.update(cursor=pos + n, data_bytes=self.state.data_bytes + data)
        self.add_done(n)
        if self.state.cursor >= self.disk.virtual_size:
            self.next_phase()

    def result(self) -> dict[str, Any]:
        return {"data_bytes": self.state.data_bytes}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".vhdmend" in p.name)


def test_read_only_operation_runs_without_lock_or_journal(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=4 * MiB, children=1, writes=6)
    op = ScanOperation.prepare(str(chain.newest))
    want = sum(e.length for e in vhdlib.open(chain.newest).extents()
               if e.kind is ExtentKind.DATA)
    # A writing operation holds the run lock on this very journal path right now...
    lock = journal.RunLock(op.journal_path)
    lock.acquire()
    try:
        with pytest.raises(OperationInProgressError):
            journal.RunLock(op.journal_path).acquire()
        checkpoints: list[dict[str, Any]] = []
        result = op.run(on_checkpoint=checkpoints.append, chunk_bytes=MiB)
    finally:
        lock.release(remove_file=True)
    # ...and the scan ran anyway, wrote no journal, and reported every chunk.
    assert result == {"status": "done", "data_bytes": want} and want > 0
    assert _leftovers(tmp_path) == []
    assert op.chunks == 4 and len(checkpoints) == 4
    assert [c["cursor"] for c in checkpoints] == [MiB, 2 * MiB, 3 * MiB, 0]
    assert checkpoints[-1]["phase"] == DONE and checkpoints[-1]["data_bytes"] == want


def test_read_only_operation_pauses_in_memory_and_cancels(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=4 * MiB, children=0, writes=4)
    op = ScanOperation.prepare(str(chain.base))
    assert op.run(pause=lambda: True) == {"status": "paused"}
    assert op.state.cursor == MiB and _leftovers(tmp_path) == []
    assert op.run()["status"] == "done" and op.chunks == 4
    with pytest.raises(Cancelled):
        ScanOperation.prepare(str(chain.base)).run(cancel=lambda: True)
    assert _leftovers(tmp_path) == []


def test_state_is_frozen_and_journals_the_same_keys(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=4 * MiB, children=1, writes=4)
    kinds = {"merge": MergeState, "compact": CompactState, "remediate": CopyState}
    for kind, state_type in kinds.items():
        op = ops.prepare(kind, str(chain.newest if kind != "compact" else chain.base))
        assert type(op.state) is state_type
        with pytest.raises(dataclasses.FrozenInstanceError):
            op.state.cursor = 5  # type: ignore[misc]
        saved = op.state.to_dict()
        assert json.loads(json.dumps(saved)) == saved  # JSON-ready
        for key in ("operation", "id", "target", "journal", "options", "phase", "cursor",
                    "done", "fence", "inputs", "plan"):
            assert key in saved, (kind, key)
        assert state_type.from_dict(json.loads(json.dumps(saved))) == op.state
    # A journal on disk rebuilds the same typed state (lists come back as tuples).
    op = ops.prepare("remediate", str(chain.newest))
    assert op.run(pause=lambda: True)["status"] == "paused"
    on_disk = journal.load(op.journal_path)
    assert on_disk["phase"] == op.state.phase and on_disk["chain"] == list(op.state.chain)
    resumed = ops.resume(op.journal_path)
    assert resumed.state == op.state and isinstance(resumed.state.chain, tuple)
    assert resumed.run()["status"] == "done"
