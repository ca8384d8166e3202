"""A checkpoint's fence check and its save are one step with respect to ``set_fence``.

The stolen-lease race (issue 7): a stale executor checks the on-disk fence, a new one
records its fence, then the stale one saves its checkpoint over it (fence rolled back,
and the stale executor goes on as if it were current). Both sides hold the journal's
fence lock (``<journal>.fence``), so either the checkpoint lands wholly before the new
fence, or it sees it and stops. The interleavings are forced with events, not timing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.chains import build_chain
from vhdlib import journal, ops
from vhdlib.errors import FenceError
from vhdlib.ops.operation import Operation

#: Long enough for a thread that is not blocked to finish its work many times over.
SETTLE = 0.5


def paused_op(tmp_path: Path, fence: int) -> Operation:
    """A convert that ran a few chunks with ``fence`` and paused (its journal on disk)."""
    chain = build_chain(tmp_path, "vhd", size=8 << 20, children=1)
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhd"))
    op.run(fence=fence, pause=lambda: True, chunk_bytes=64 << 10)
    assert journal.load(op.journal_path)["fence"] == fence
    return op


class Gate:
    """Holds ``journal.save`` in the thread named ``who`` until :meth:`open` is called."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, who: str) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()
        real = journal.save

        def save(path: str, state: dict[str, Any]) -> None:
            if threading.current_thread().name == who:
                self.reached.set()
                assert self.go.wait(10), "the gate was never opened"
            real(path, state)
        monkeypatch.setattr(journal, "save", save)

    def open(self) -> None:
        self.go.set()


def start(name: str, fn: Any, errors: list[BaseException]) -> threading.Thread:
    def body() -> None:
        try:
            fn()
        except BaseException as e:  # the test reads what happened
            errors.append(e)
    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    return t


def test_set_fence_waits_for_a_checkpoint_between_its_check_and_its_save(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stale executor (fence 1) held between its fence check and its save
    op = paused_op(tmp_path, fence=1)
    gate = Gate(monkeypatch, "stale")
    stale_errors: list[BaseException] = []
    stale = start("stale", op.checkpoint, stale_errors)
    assert gate.reached.wait(10)
    # When a new executor records fence 2 meanwhile
    thief_errors: list[BaseException] = []
    thief = start("thief", lambda: journal.set_fence(Path(op.journal_path), 2), thief_errors)
    # Then set_fence waits for the checkpoint (without the lock it would land now, and the
    # stale save below would roll the journal back to fence 1)
    thief.join(SETTLE)
    assert thief.is_alive(), "set_fence did not wait for the checkpoint in progress"
    assert journal.load(op.journal_path)["fence"] == 1
    gate.open()
    stale.join(10)
    thief.join(10)
    assert not stale_errors and not thief_errors, (stale_errors, thief_errors)
    # and the new fence stands; the stale executor's next checkpoint is refused
    assert journal.load(op.journal_path)["fence"] == 2
    with pytest.raises(FenceError, match="lost to 2"):
        op.checkpoint()
    assert journal.load(op.journal_path)["fence"] == 2


def test_a_checkpoint_waits_for_set_fence_and_then_sees_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given set_fence(2) held between its read and its save
    op = paused_op(tmp_path, fence=1)
    cursor = journal.load(op.journal_path)["cursor"]
    gate = Gate(monkeypatch, "thief")
    thief_errors: list[BaseException] = []
    thief = start("thief", lambda: journal.set_fence(Path(op.journal_path), 2), thief_errors)
    assert gate.reached.wait(10)
    # When the stale executor checkpoints meanwhile (its check would still read fence 1)
    op.update(cursor=cursor + 12345)
    stale_errors: list[BaseException] = []
    stale = start("stale", op.checkpoint, stale_errors)
    stale.join(SETTLE)
    assert stale.is_alive(), "the checkpoint did not wait for set_fence"
    gate.open()
    thief.join(10)
    stale.join(10)
    # Then the checkpoint saw the new fence and saved nothing
    assert not thief_errors
    assert len(stale_errors) == 1 and isinstance(stale_errors[0], FenceError), stale_errors
    on_disk = journal.load(op.journal_path)
    assert on_disk["fence"] == 2 and on_disk["cursor"] == cursor


def test_the_fence_lock_excludes_another_process(tmp_path: Path) -> None:
    # Given another process holding the journal's fence lock
    op = paused_op(tmp_path, fence=1)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from vhdlib import journal\n"
         f"with journal.fence_lock({op.journal_path!r}):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # When this process sets a fence, it waits for the other to let go
        errors: list[BaseException] = []
        thief = start("thief", lambda: journal.set_fence(Path(op.journal_path), 2), errors)
        thief.join(SETTLE)
        assert thief.is_alive(), "set_fence did not wait for the other process's lock"
        assert journal.load(op.journal_path)["fence"] == 1
    finally:
        holder.communicate(timeout=10)  # closes its stdin: it lets go and exits
    thief.join(10)
    assert not errors and journal.load(op.journal_path)["fence"] == 2


def test_a_finished_run_leaves_no_fence_lock(tmp_path: Path) -> None:
    op = paused_op(tmp_path, fence=1)
    lock = Path(op.journal_path + journal.FENCE_LOCK)
    assert lock.exists()       # beside the paused journal, like the run lock
    ops.resume(op.journal_path).run(fence=2)
    assert not lock.exists() and not Path(op.journal_path).exists()
