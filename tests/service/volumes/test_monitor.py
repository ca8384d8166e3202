"""One host's volumes observed over time on a real (tmpfs) volume: the trend, the risk, the
plan as jobs, and no absolute path anywhere in what is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import config
from service.store import StubJobStore
from service.volumes import monitor
from tests import tmpfs
from tests.chains import create
from tests.tmpfs import free_bytes
from vhdlib.layer import DiskType

MiB = 1 << 20
volume = tmpfs.volume


def grow(path: Path, by: int) -> None:
    with open(path, "ab") as f:
        f.write(b"\1" * by)


def test_falling_overcommitted_then_critical(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("v", 128)
    root = vol / "vms"
    root.mkdir()
    create("vhd", root / "fixed.vhd", 8 * MiB, DiskType.FIXED).close()
    settings = config.load({}, host="h1", roots={"vms": str(root)}, reserve=16 * MiB)
    vols = StubJobStore().volumes
    seen: list[tuple[str | None, str]] = []

    def on_status(prev, new) -> None:  # type: ignore[no-untyped-def]
        seen.append((prev["risk"] if prev else None, new["risk"]))

    t0 = 1_800_000_000.0
    (st,) = monitor.observe(settings, vols, now=t0, on_status=on_status)
    assert st["risk"] == "ok" and st["seconds_to_full"] is None
    assert st["roots"] == ["vms"] and st["total_bytes"] == 128 * MiB
    # Free space falls by 2 MiB every 5 minutes.
    for i in range(1, 13):
        grow(root / "hog", 2 * MiB)
        (st,) = monitor.observe(settings, vols, now=t0 + 300 * i, on_status=on_status)
    true = (free_bytes(vol) - 16 * MiB) / (2 * MiB / 300)
    assert st["seconds_to_full"] == pytest.approx(true, rel=0.02)
    assert st["rate_bytes_per_second"] == pytest.approx(-2 * MiB / 300, rel=0.02)
    assert st["risk"] == "critical" and "reaches the reserve" in st["reasons"][0]
    assert len(vols.history(st["id"])) == 13

    # Steady again (an hour flat): the trend is gone; a dynamic disk that can outgrow the
    # free space is a warning, with a plan whose first step is a job to submit.
    for i in range(13, 26):
        (st,) = monitor.observe(settings, vols, now=t0 + 3600 * 7 + 300 * i)
    assert st["seconds_to_full"] is None and st["risk"] == "ok"
    (root / "hog").unlink()
    create("vhd", root / "dyn.vhd", 112 * MiB, DiskType.DYNAMIC).close()
    (st,) = monitor.observe(settings, vols, now=t0 + 9 * 3600, on_status=on_status)
    assert st["risk"] == "warning" and "over-committed" in st["reasons"][0]
    step = st["plan"]["steps"][0]
    assert step["job"] == {"type": "remediate", "host": "h1", "root": "vms",
                           "path": "dyn.vhd", "options": {"type": "fixed"}}
    chains = {c["leaf"]: c for c in st["chains"]}
    assert chains["dyn.vhd"]["risk"] == "warning" and chains["fixed.vhd"]["risk"] == "ok"
    assert chains["dyn.vhd"]["layers"] == [{"root": "vms", "path": "dyn.vhd"}]

    tmpfs.fill(root / "hog", 8 * MiB)
    (st,) = monitor.observe(settings, vols, now=t0 + 9 * 3600 + 300, on_status=on_status)
    assert st["risk"] == "critical" and "below the reserve" in st["reasons"][0]
    assert seen[0] == (None, "ok") and ("ok", "warning") in seen and seen[-1] == (
        "warning", "critical")
    assert str(vol) not in json.dumps(vols.statuses())
