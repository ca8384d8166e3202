"""``vhdmend scan``: exit codes, the JSON shape, the table, and plans executed as printed
on nearly full real (tmpfs) volumes."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

import vhdlib
from tests import tmpfs
from tests.chains import Chain, build_chain, create
from tests.tmpfs import fill, free_bytes
from tests.vhdmend.helpers import assert_clean_error, run_cli
from vhdlib.layer import DiskType

MiB = 1 << 20

volume = tmpfs.volume  # the fixture: real tmpfs volumes


def _content_sha(path: Path) -> str:
    h = hashlib.sha256()
    with vhdlib.open(str(path)) as disk:
        for off in range(0, disk.virtual_size, 4 * MiB):
            h.update(disk.read(off, min(4 * MiB, disk.virtual_size - off)))
    return h.hexdigest()


def test_exit_codes_and_json_shape(tmp_path: Path) -> None:
    create("vhd", tmp_path / "fixed.vhd", 4 * MiB, DiskType.FIXED).close()
    r = run_cli("scan", tmp_path, "--json", "--reserve", "0")
    assert r.code == 0, r.err
    data = r.json()
    assert set(data) >= {"volumes", "chains", "files_scanned", "seconds"}
    (vol,) = data["volumes"]
    assert set(vol) >= {"mount", "total_bytes", "free_bytes", "disk_bytes", "growth_bytes",
                        "reserve_bytes", "risk", "reasons"}
    (chain,) = data["chains"]
    assert set(chain) >= {"leaf", "layers", "format", "virtual_size", "allocated_bytes",
                          "max_bytes", "growth_bytes", "snapshots",
                          "oldest_snapshot_age_seconds", "problems", "holders"}
    assert chain["leaf"] == str(tmp_path / "fixed.vhd") and chain["growth_bytes"] == 0

    # A dynamic disk larger than the volume's free space: at risk, exit 1.
    create("vhdx", tmp_path / "huge.vhdx", 60 << 40, DiskType.DYNAMIC).close()
    r = run_cli("scan", tmp_path, "--json")
    assert r.code == 1
    assert r.json()["volumes"][0]["risk"] == "warning"

    assert_clean_error(run_cli("scan", tmp_path / "missing"), 3)
    assert run_cli("scan").code == 2
    assert_clean_error(run_cli("scan", tmp_path, "--allow-delete"), 2)
    assert run_cli("scan", tmp_path, "--reserve", "lots").code == 2


def test_a_broken_chain_is_exit_1_and_listed_with_its_problem(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=4 * MiB, children=1, writes=2)
    chain.base.unlink()
    r = run_cli("scan", tmp_path, "--reserve", "0")
    assert r.code == 1
    assert "missing_parent" in r.out
    assert str(chain.newest) in r.out


def test_table_lists_volumes_then_chains(tmp_path: Path) -> None:
    build_chain(tmp_path, "vhdx", size=8 * MiB, children=2, writes=2)
    r = run_cli("scan", tmp_path, "--reserve", "1G")
    lines = r.out.splitlines()
    assert lines[0].split()[:2] == ["VOLUME", "RISK"]
    header = next(i for i, line in enumerate(lines) if line.startswith("CHAIN"))
    assert "base_00000001" in lines[header + 1]
    assert " 2 " in lines[header + 1]  # two snapshots


# --- plans executed as printed ------------------------------------------------------------

def _run_plan(vol: Path, *extra: object, reserve: str = "4M") -> dict[str, Any]:
    r = run_cli("scan", vol, "--json", "--plan", "--reserve", reserve, *extra)
    assert r.code == 1, r.err
    (v,) = [v for v in r.json()["volumes"] if v["mount"] == str(vol)]
    assert v["risk"] in ("warning", "critical")
    return v


def _execute(v: dict[str, Any], vol: Path) -> None:
    """Run each step's argv as printed; each fits and lands where it said it would."""
    steps = v["plan"]["steps"]
    assert steps
    for step in steps:
        free = free_bytes(vol)
        assert step["needs_bytes"] <= free
        assert abs(free - step["free_before_bytes"]) <= free // 100 + 4096
        assert step["argv"][0] == "vhdmend"
        r = run_cli(*step["argv"][1:])
        assert r.code == 0, (step["argv"], r.err)
        after = free_bytes(vol)
        assert abs(after - step["free_after_bytes"]) <= max(after, 1) // 100 + 4096, step
    final = free_bytes(vol)
    assert abs(final - v["plan"]["free_after_bytes"]) <= final // 100 + 4096


def _check_fixed_and_same(chains: list[Chain], before: dict[str, str], vol: Path) -> None:
    r = run_cli("scan", vol, "--json", "--reserve", "0")
    by_leaf = {c["leaf"]: c for c in r.json()["chains"]}
    for chain in chains:
        # The result took the base's name: one fixed disk, reading exactly as before.
        assert _content_sha(chain.base) == before[str(chain.base)] == chain.sha256()
        found = by_leaf[str(chain.base)]
        assert found["type"] == "fixed" and found["snapshots"] == 0
        assert found["growth_bytes"] == 0
        for p in chain.paths[1:]:
            assert not p.exists()


def _chains(vol: Path, *, heavy: bool = False) -> list[Chain]:
    """Three chains, VHD and VHDX. ``heavy``: snapshots that together hold more than the
    fixed disk will (every child touches most blocks), as long-lived checkpoints do."""
    out = []
    for i, fmt in enumerate(["vhd", "vhdx", "vhd"]):
        folder = vol / f"vm{i}"
        folder.mkdir()
        out.append(build_chain(folder, fmt, size=(12 + 4 * i) * MiB,
                               children=3 if heavy else 2, writes=30 if heavy else 6,
                               max_sectors=4096 if heavy else 96, seed=i + 1))
    return out


@pytest.mark.slow
def test_plan_in_place_on_a_nearly_full_volume(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("full", 192)
    chains = _chains(vol)
    (vol / "never").mkdir()
    create("vhd", vol / "never" / "huge.vhd", 512 * MiB, DiskType.DYNAMIC).close()
    before = {str(c.base): _content_sha(c.newest) for c in chains}
    # Room for the three fixed disks (12 + 36 + 20 MiB) one after the other, archives
    # staying in place.
    fill(vol / "hog", 76 * MiB)
    v = _run_plan(vol)
    plan = v["plan"]
    assert sorted(s["chain"] for s in plan["steps"]) == sorted(str(c.newest) for c in chains)
    steps = plan["steps"]
    assert steps[0]["free_before_bytes"] == v["free_bytes"]
    for prev, step in itertools.pairwise(steps):
        assert step["free_before_bytes"] == prev["free_after_bytes"]
        assert step["needs_bytes"] <= step["free_before_bytes"]
    assert all(s["frees_bytes"] == 0 for s in plan["steps"])
    (never,) = plan["infeasible"]
    assert never["leaf"] == str(vol / "never" / "huge.vhd")
    assert never["short_bytes"] > 0 and "short" in never["why"]
    assert any("--spare-root" in fix for fix in never["would_fit_if"])
    assert plan["remaining_risk"] != "ok"
    _execute(v, vol)
    _check_fixed_and_same(chains, before, vol)


@pytest.mark.slow
def test_plan_with_delete_orders_steps_to_fit(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("tight", 256)
    chains = _chains(vol, heavy=True)
    before = {str(c.base): _content_sha(c.newest) for c in chains}
    # Too little for all three in place; deleting old chains as it goes makes it fit.
    fill(vol / "hog", 40 * MiB)
    # Snapshots this full leave little growth: a reserve of 36 MiB puts it at risk.
    in_place = _run_plan(vol, reserve="36M")["plan"]
    assert in_place["infeasible"]
    v = _run_plan(vol, "--allow-delete", reserve="36M")
    plan = v["plan"]
    assert not plan["infeasible"]
    assert len(plan["steps"]) == 3
    assert all(s["argv"][-1] == "--delete" for s in plan["steps"])
    assert plan["remaining_risk"] == "ok" or plan["remaining_growth_bytes"] == 0
    _execute(v, vol)
    _check_fixed_and_same(chains, before, vol)
    assert plan["remaining_growth_bytes"] == 0


@pytest.mark.slow
def test_plan_with_a_spare_root_archives_there(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("main", 256)
    spare: Path = volume("spare", 512)
    chains = _chains(vol, heavy=True)
    before = {str(c.base): _content_sha(c.newest) for c in chains}
    fill(vol / "hog", 40 * MiB)
    v = _run_plan(vol, "--spare-root", spare, reserve="36M")
    plan = v["plan"]
    assert not plan["infeasible"]
    assert all("--archive" in s["argv"] for s in plan["steps"])
    assert all(s["frees_bytes"] > 0 and s["spare_needs_bytes"] > 0 for s in plan["steps"])
    spare_before = free_bytes(spare)
    _execute(v, vol)
    _check_fixed_and_same(chains, before, vol)
    archived = sorted(p.name for p in spare.rglob("*") if p.is_file())
    assert len(archived) == sum(len(c.paths) for c in chains)
    used = spare_before - free_bytes(spare)
    assert 0 < used <= sum(s["spare_needs_bytes"] for s in plan["steps"])
    # The archives are chains nobody runs: they do not count as growth.
    r = run_cli("scan", spare, "--json", "--reserve", "0")
    assert r.code == 0, r.out
    assert all(c["archived"] for c in r.json()["chains"])
    os.sync()
