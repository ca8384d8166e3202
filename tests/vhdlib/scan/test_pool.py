"""A large tree's files examined in worker processes give exactly the in-process figures."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from tests.chains import build_chain
from vhdlib import scan
from vhdlib.scan import pool

MiB = 1 << 20


def _report(result: scan.ScanResult) -> str:
    d = result.to_dict()
    for chain in d["chains"]:
        chain.pop("oldest_snapshot_age_seconds")  # depends on the moment of the call
    # The volume's free space is another process's business (tmp_path is a shared disk).
    d = {"chains": d["chains"], "disks_found": d["disks_found"],
         "disks": {p: f.to_dict() for p, f in result.disks.items()}}
    return json.dumps(d, sort_keys=True)


def test_worker_processes_report_what_the_in_process_scan_reports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i, fmt in enumerate(["vhd", "vhdx", "vhd", "vhdx"]):
        folder = tmp_path / f"vm{i}"
        folder.mkdir()
        build_chain(folder, fmt, size=8 * MiB, children=2, writes=4, seed=i)
    (tmp_path / "vm0" / "notes.txt").write_bytes(b"not a disk" * 100)
    (tmp_path / "vm1" / "broken.vhdx").write_bytes(b"vhdxfile" + bytes(4096))
    (tmp_path / "vm2" / "tiny.vhd").write_bytes(b"x")
    in_process = scan.scan([str(tmp_path)], reserve=0, processes=0)
    monkeypatch.setattr(pool, "CHUNK", 2)
    monkeypatch.setattr(scan, "PROCESS_AFTER", 3)
    calls: list[int] = []
    real = pool.ProcessFeed._submit

    def counting(self: pool.ProcessFeed) -> None:
        calls.append(len(self._chunk))
        real(self)

    monkeypatch.setattr(pool.ProcessFeed, "_submit", counting)
    in_workers = scan.scan([str(tmp_path)], reserve=0, processes=2)
    assert calls and sum(calls) == in_process.files_scanned - 3
    assert in_workers.files_scanned == in_process.files_scanned == 15
    assert len(in_workers.disks) == 12
    assert set(in_workers.unreadable) == set(in_process.unreadable) and \
        len(in_workers.unreadable) == 2
    assert _report(in_workers) == _report(in_process)


def _workers_to(queue: Any) -> None:
    queue.put(pool.workers())


def test_a_daemonic_caller_gets_no_worker_processes() -> None:
    # A Celery prefork child is daemonic: it may not start processes of its own.
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_workers_to, args=(queue,), daemon=True)
    child.start()
    try:
        assert queue.get(timeout=60) == 1
    finally:
        child.join(60)
    assert pool.workers() == len(os.sched_getaffinity(0))
