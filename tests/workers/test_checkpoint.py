"""One checkpoint: the on-disk journal; the job record keeps only a small position.

On a 2 TiB sparse chain the copy engine's state ends with one digest per 256 MiB window
(8,192 of them) plus the plan and every input's identity. The job record must stay under
8 KiB whatever the disk size, and a resumed execution reads the journal, not Redis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fakeredis

from service.config import load
from service.job import Position, new_job
from service.store import RedisJobStore
from vhdlib import journal as vjournal
from vhdlib.layer import DiskType
from vhdlib.vhdx import create

TIB = 1 << 40
WINDOW = 256 << 20
RECORD_LIMIT = 8 << 10


def record_bytes(store: RedisJobStore, job_id: str) -> int:
    return sum(len(k) + len(v) for k, v in store.get_raw(job_id).items())


def sparse_chain(folder: Path, size: int = 2 * TIB) -> Path:
    """A dynamic VHDX base of ``size`` with a little data, and a differencing child."""
    folder.mkdir(parents=True)
    base = create(str(folder / "base.vhdx"), size, DiskType.DYNAMIC)
    try:
        base.write(0, b"\x11" * (1 << 20))
        base.write(size - (1 << 20), b"\x22" * (1 << 20))
        base.flush()
        child = create(str(folder / "base_1.avhdx"), size, DiskType.DIFFERENCING, parent=base)
    finally:
        base.close()
    child.write(4 << 20, b"\x33" * (1 << 20))
    child.flush()
    child.close()
    return folder / "base_1.avhdx"


def test_the_job_record_stays_small_on_a_2_tib_chain(tmp_path, monkeypatch) -> None:
    # Given a remediate job on a 2 TiB sparse chain, run in-process with its real plan
    from workers import tasks
    root = tmp_path / "root"
    newest = sparse_chain(root / "vm1")
    store = RedisJobStore(fakeredis.FakeRedis(), prefix="t")
    settings = load({}, prefix="t", roots={"vms": str(root)}, progress_interval=0.0)
    job, _ = store.create(new_job("remediate", "h1", "vms", f"vm1/{newest.name}",
                                  options={"type": "dynamic"}))
    sizes: list[int] = []
    states: list[dict[str, Any]] = []

    def engine_run(op: Any, **kw: Any) -> dict[str, Any]:
        # The real operation, its copy played out: after every chunk the engine saves its
        # state to the journal and reports it, one digest more per window copied (what
        # vhdlib's copy phase adds); the engine's own I/O over 2 TiB is left out.
        windows = op.plan.to_dict()["details"].get("virtual_size", 2 * TIB) // WINDOW
        digests: dict[str, int] = {}
        for index in range(windows):
            digests[str(index)] = index * 2654435761 % (1 << 32)
            if (index + 1) % 1024 == 0:
                # The state is frozen: a checkpoint is a new value (op.update).
                op.update(phase="copy", digests=dict(digests), cursor=(index + 1) * WINDOW,
                          done={"copy": (index + 1) * WINDOW})
                vjournal.save(op.journal_path, op.state.to_dict())
                kw["on_checkpoint"](op.state.to_dict())
                states.append(op.state.to_dict())
                sizes.append(record_bytes(store, job.id))
        return {"status": "paused"}
    monkeypatch.setattr(tasks.engine, "run", engine_run)
    # When it runs (and pauses at the end of its copy phase)
    outcome = tasks.JobRun(job.id, store, settings, send=lambda j, h: None).run()
    # Then after every chunk the record stayed under 8 KiB, though the state the engine
    # reported (and wrote to its journal) grew far past it
    assert outcome == "paused"
    final = states[-1]
    assert len(final["digests"]) == 8192
    assert len(json.dumps(final)) > 20 * RECORD_LIMIT
    assert len(sizes) == 8 and max(sizes) < RECORD_LIMIT, sizes
    paused = store.get(job.id)
    assert record_bytes(store, job.id) < RECORD_LIMIT
    # The record keeps a typed position; the journal on disk is the checkpoint
    assert isinstance(paused.checkpoint, Position)
    assert paused.checkpoint.journal == final["journal"]
    assert (paused.checkpoint.phase, paused.checkpoint.cursor) == ("copy", 2 * TIB)
    assert paused.checkpoint.done == 2 * TIB and paused.checkpoint.fence == paused.fence
    on_disk = vjournal.load(final["journal"])
    assert on_disk["digests"] == final["digests"] and on_disk["cursor"] == 2 * TIB
    # and the plan is stored once on the record, not inside the position
    assert paused.plan is not None and "plan" not in paused.checkpoint.to_dict()


def test_set_fence_records_a_newer_fence_only(tmp_path) -> None:
    path = tmp_path / "x.vhdmend.json"
    vjournal.save(str(path), {"operation": "merge", "fence": 3, "cursor": 5})
    vjournal.set_fence(path, 2)
    assert vjournal.load(str(path))["fence"] == 3
    vjournal.set_fence(path, 4)
    state = vjournal.load(str(path))
    assert state["fence"] == 4 and state["cursor"] == 5
