"""``scan --reclaimable``: a chain's stored bytes in the guest's free clusters, against the
free space as dumpe2fs and ntfs-3g report it and the allocation as qemu-img maps it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vhdlib
from tests.vhdlib.ops.test_reclaim import _child_with, data_ranges, guest, qemu_convert
from vhdlib import scan
from vhdlib.scan.reclaimable import measure, overlap

__all__ = ["guest"]  # the module-scoped fixture: real NTFS + ext4 guests

MiB = 1 << 20


def _chain(guest: dict, folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    base_raw = folder / "base.img"
    base_raw.write_bytes(guest["before"].read_bytes())
    base = qemu_convert(base_raw, folder / "base.vhd", "vpc", "-o", "subformat=dynamic")
    child = folder / "child.vhd"
    _child_with(base, guest["after"], child)
    base_raw.unlink()
    return base, child


def test_overlap_counts_bytes_in_both() -> None:
    assert overlap([(0, 10), (20, 30)], [(5, 25)]) == 10
    assert overlap([(0, 10)], [(10, 20)]) == 0
    assert overlap([(0, 100)], [(1, 2), (50, 60), (99, 200)]) == 12


def test_a_single_disk_counts_its_stored_stale_bytes(guest: dict, tmp_path: Path) -> None:
    base, _ = _chain(guest, tmp_path / "c")
    got = measure(str(base))
    # Independent: qemu-img's map of what the VHD stores, and the tools' free clusters.
    want = overlap(data_ranges(base, "vhd"), guest["truth_before"])
    assert got.error is None and got.kept == []
    assert got.reclaimable_bytes == want
    assert want > 20 * MiB  # the stale bytes under both quick formats are stored
    assert got.free_bytes == sum(e - s for s, e in guest["truth_before"])


def test_a_chain_counts_what_the_newest_guest_freed(guest: dict, tmp_path: Path) -> None:
    base, child = _chain(guest, tmp_path / "c")
    got = measure(str(child))
    with vhdlib.open(str(child)) as disk:
        stored = [(e.offset, e.end) for e in disk.extents() if e.kind.value == "data"]
    assert got.reclaimable_bytes == overlap(stored, guest["truth_after"])
    # The 6 MiB file the child's guest deleted is still stored in the base; the 2 MiB new
    # NTFS file took some free space.
    assert got.reclaimable_bytes - measure(str(base)).reclaimable_bytes >= 3 * MiB


def test_scan_is_opt_in_and_skips_what_cannot_be_opened(guest: dict, tmp_path: Path) -> None:
    _, child = _chain(guest, tmp_path / "c")
    plain = scan.scan([str(tmp_path)])
    assert all(c.reclaim is None for c in plain.chains)
    assert "reclaimable_bytes" not in plain.to_dict()["chains"][0]
    res = scan.scan([str(tmp_path)], reclaimable=True)
    (chain,) = res.chains
    assert chain.leaf == os.path.realpath(child)
    assert chain.reclaim is not None
    assert chain.reclaim["reclaimable_bytes"] == measure(str(child)).reclaimable_bytes
    bad = tmp_path / "junk.vhd"
    bad.write_bytes(b"conectix" + b"\0" * 600)
    assert measure(str(bad)).reclaimable_bytes is None
    assert measure(str(bad)).error


@pytest.mark.slow
def test_cli_scan_reclaimable(guest: dict, tmp_path: Path) -> None:
    _, child = _chain(guest, tmp_path / "c")
    want = measure(str(child)).reclaimable_bytes
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "vhdmend", "scan", "--reclaimable", "--json",
                          str(tmp_path)], capture_output=True, env=env, check=False)
    assert out.returncode in (0, 1), out.stderr
    (chain,) = json.loads(out.stdout)["chains"]
    assert chain["reclaimable_bytes"] == want
    assert chain["reclaim"]["kept_whole"] == []
    text = subprocess.run([sys.executable, "-m", "vhdmend", "scan", "--reclaimable",
                           str(tmp_path)], capture_output=True, text=True, env=env,
                          check=False)
    assert "reclaimable" in text.stdout and text.returncode in (0, 1)
