"""The job-kind registry: kinds declared once; a read-only kind is one declaration and runs
without a journal, a run lock or a chain lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from service import kinds
from service.config import load
from service.errors import ClientError
from service.job import new_job
from service.kinds import Context, JobKind
from service.store import StubJobStore
from vhdlib.layer import DiskType
from vhdlib.vhd import create


def test_the_built_in_kinds() -> None:
    assert kinds.names() == ("inspect", "plan", "merge", "compact", "convert", "remediate",
                             "scan")
    assert kinds.get("scan").folder and not kinds.get("inspect").folder
    for name in ("inspect", "plan", "scan"):
        assert not kinds.get(name).mutating and kinds.get(name).run is not None
    for name in ("merge", "compact", "convert", "remediate"):
        kind = kinds.get(name)
        assert kind.mutating and kind.operation == name and kind.run is None
    assert kinds.get("merge").path_options == {"into": True, "archive": False}
    assert kinds.get("convert").path_options == {"output": False}
    with pytest.raises(ClientError):
        kinds.get("defrag")


def test_the_api_accepts_exactly_the_registered_kinds() -> None:
    from api.jobs.schemas import JOB_TYPES
    assert tuple(JOB_TYPES) == kinds.names()


def test_a_kind_is_either_read_only_with_a_run_or_mutating_with_an_operation() -> None:
    with pytest.raises(ValueError):
        JobKind("bad", "", mutating=True, run=lambda ctx: {})
    with pytest.raises(ValueError):
        JobKind("bad", "")
    with pytest.raises(ValueError):
        kinds.register(JobKind("inspect", "another inspect", run=lambda ctx: {}))


def test_a_read_only_kind_runs_without_journal_run_lock_or_chain_lock(tmp_path, monkeypatch):
    # Given a read-only kind declared here (what adding a kind module does) and a disk
    from workers.tasks import JobRun
    seen: list[Context] = []

    def scan(ctx: Context) -> dict[str, Any]:
        seen.append(ctx)
        return {"result": {"file_bytes": os.path.getsize(ctx.path),
                           "threshold": ctx.options.get("threshold")}}
    monkeypatch.setitem(kinds._REGISTRY, "scan", JobKind(
        "scan", "Measure a disk", options=("threshold",), run=scan))
    root = tmp_path / "root"
    root.mkdir()
    create(str(root / "d.vhd"), 8 << 20, DiskType.DYNAMIC).close()
    before = sorted(os.listdir(root))
    store = StubJobStore()
    job, _ = store.create(new_job("scan", "h1", "vms", "d.vhd", options={"threshold": 5}))
    # When a worker runs it
    outcome = JobRun(job.id, store, load({}, roots={"vms": str(root)}),
                     send=lambda j, h: None).run()
    # Then it succeeded with its result, and nothing else was taken or written
    done = store.get(job.id)
    assert outcome == "succeeded" and done.state == "succeeded", done.error
    assert done.result == {"file_bytes": os.path.getsize(root / "d.vhd"), "threshold": 5}
    assert seen and Path(seen[0].path) == (root / "d.vhd").resolve()
    assert store.chains.fences == {} and store.chains.leases == {}
    assert done.checkpoint is None and done.fence is None
    assert sorted(os.listdir(root)) == before        # no journal, no .lock file
    assert not store.lease_alive(job.id)


def test_the_kinds_options_are_the_api_schemas_fields() -> None:
    # One vocabulary: what a kind declares is what the API accepts for it (plan: any
    # operation's, plus the operation's name).
    from api.jobs.schemas import OPTION_TYPES, options_schema
    schemas = {name: options_schema(name) for name in OPTION_TYPES}
    for name, schema in schemas.items():
        assert set(kinds.get(name).options) == set(schema().fields), name
    merged = {f for schema in schemas.values() for f in schema().fields} - {"lenient"}
    assert set(kinds.get("plan").options) - {"operation", "lenient"} == merged


def test_the_kinds_options_are_vhdlibs_declarations() -> None:
    # The single source: each kind's options are the operation's declarations, in order.
    from vhdlib.ops import OPERATIONS
    from vhdlib.ops.options import READ
    assert kinds.get("inspect").options == tuple(o.name for o in READ)
    for name, cls in OPERATIONS.items():
        kind = kinds.get(name)
        assert kind.mutating and kind.operation == name
        assert kind.options == tuple(o.name for o in cls.options), name
    assert "reclaim" in kinds.get("compact").options
    assert kinds.get("merge").path_options == {"into": True, "archive": False}
    assert kinds.get("convert").path_options == {"output": False}
    assert kinds.get("remediate").path_options == {"output": False, "archive": False}
    assert kinds.get("plan").path_options == {"into": True, "archive": False,
                                              "output": False}
