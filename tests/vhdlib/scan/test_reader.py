"""The scan's header-only reader gives exactly what the full path gives (walk.classify, then
layers.measure through open_layer), on every real image, on built chains and on damaged
files; it takes the fast path on plain files and falls back on unusual ones."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from tests import realimages
from tests.chains import build_chain, create
from tests.vhdlib import damage
from tests.vhdlib.fuzz import mutate, structure
from vhdlib import formats, scan
from vhdlib.layer import DiskType
from vhdlib.scan import reader
from vhdlib.vhd.bat import used_indices

MiB = 1 << 20

#: Real images the full path reads only with warnings or a log replay (or refuses): the
#: fast path must leave them to it.
UNUSUAL = {"dfvfs/image.vhd", "dfvfs/image-differential.vhd",
           "discutils/vhdx-log-replay.vhdx", "qemu-iotests/iotest-dirtylog-10G-4M.vhdx"}


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, int]:
    """(fast result, full result, how many times the fast one fell back)."""
    st = os.lstat(path)
    falls: list[str] = []
    real_full = reader.full

    def counting(p: str, s: os.stat_result) -> reader.Examined:
        falls.append(p)
        return real_full(p, s)

    monkeypatch.setattr(reader, "full", counting)
    fast = reader.examine(str(path), st)
    monkeypatch.setattr(reader, "full", real_full)
    return fast, reader.full(str(path), st), len(falls)


@pytest.mark.parametrize("image", [pytest.param(i, marks=pytest.mark.slow) if i.slow else i
                                   for i in realimages.IMAGES], ids=lambda i: i.name)
def test_every_real_image_reads_as_the_full_path_reads_it(
        image: realimages.RealImage, monkeypatch: pytest.MonkeyPatch) -> None:
    path = realimages.materialize(image.name)
    fast, slow, falls = _both(path, monkeypatch)
    assert fast == slow
    assert slow[0] is not None and slow[0].kind == "disk", slow
    assert falls == (1 if image.name in UNUSUAL else 0), image.name


@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
@pytest.mark.parametrize("block", [None, 32 * MiB])
def test_built_chains_take_the_fast_path(tmp_path: Path, fmt: str, block: int | None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if fmt == "vhd" and block:
        block = 4 * MiB
    chain = build_chain(tmp_path, fmt, size=96 * MiB, children=2, writes=12,
                        block_size=block)
    fixed = create(fmt, tmp_path / f"fixed.{fmt}", 8 * MiB, DiskType.FIXED)
    fixed.close()
    for path in [*chain.paths, tmp_path / f"fixed.{fmt}"]:
        fast, slow, falls = _both(path, monkeypatch)
        assert not isinstance(slow[1], str), slow
        assert fast == slow and falls == 0, path


def test_a_batch_reads_each_file_as_alone(tmp_path: Path) -> None:
    for i, fmt in enumerate(["vhd", "vhdx"]):
        (tmp_path / fmt).mkdir()
        build_chain(tmp_path / fmt, fmt, size=16 * MiB, children=2, writes=4, seed=i)
    (tmp_path / "notes.txt").write_bytes(b"not a disk" * 100)
    (tmp_path / "empty.vhd").write_bytes(b"")
    (tmp_path / "noise.vhdx").write_bytes(random.Random(3).randbytes(8192))
    items = [(str(p), os.lstat(p)) for p in sorted(tmp_path.rglob("*")) if p.is_file()]
    assert reader.examine_all(items) == [reader.full(p, st) for p, st in items]
    assert [reader.examine(p, st) for p, st in items] == [reader.full(p, st) for p, st in items]


def _damaged(seed: int, folder: Path, fmt: str) -> Path:
    """A built image with one of its structures damaged (the fuzz harness's mutations,
    found by a parser that shares nothing with vhdlib)."""
    rnd = random.Random(seed)
    chain = build_chain(folder, fmt, size=24 * MiB, children=1, writes=6, seed=seed)
    path = chain.paths[-1] if rnd.random() < 0.5 else chain.paths[0]
    data = bytearray(path.read_bytes())
    structs = structure.structures(data)
    what = rnd.random()
    if what < 0.7:
        mutate._mutate_field(rnd, data, structs, extreme=rnd.random() < 0.5)
    elif what < 0.85:
        st = rnd.choice(structs)
        mutate._flip_bytes(rnd, data, st)
    else:
        data = mutate._truncate(rnd, data, structs)
    path.write_bytes(data)
    # Written back before the two reads: a file's st_blocks can grow under writeback (its
    # extent blocks), which would make the two readers' figures differ by timing alone.
    os.sync()
    return path


@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_damaged_files_read_or_fail_exactly_as_before(tmp_path: Path, fmt: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    falls = 0
    errors = 0
    for seed in range(40):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        path = _damaged(seed, folder, fmt)
        fast, slow, fell = _both(path, monkeypatch)
        assert fast == slow, (seed, fast, slow)
        falls += fell
        errors += isinstance(slow[1], str) or slow[0] is None or slow[0].kind != "disk"
    # Some damage is refused (typed message), some is read with a warning: both are the
    # full path's to word, so the fast path must have handed over at least those.
    assert errors > 0 and falls >= errors


def test_a_bat_problem_falls_back_and_is_worded_as_before(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    chain = build_chain(tmp_path, "vhd", size=24 * MiB, children=0, writes=6)
    path = chain.paths[0]
    # Point the first used BAT entry into the dynamic header (metadata).
    raw = bytearray(path.read_bytes())
    table = damage.get_field(path, "vhd.header", "table_offset")
    first = next(i for i in range(0, 48, 4) if raw[table + i:table + i + 4] != b"\xff" * 4)
    raw[table + first:table + first + 4] = struct.pack(">I", 1)
    path.write_bytes(raw)
    fast, slow, falls = _both(path, monkeypatch)
    assert fast == slow and falls == 1
    assert isinstance(slow[1], str) and "block allocation table" in slow[1]


def test_a_file_changed_since_the_walk_falls_back(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    chain = build_chain(tmp_path, "vhdx", size=8 * MiB, children=0, writes=2)
    path = chain.paths[0]
    old = os.lstat(path)
    with open(path, "ab") as f:
        f.write(bytes(4096))  # grows after the walk's lstat
    falls: list[str] = []

    def full(p: str, s: os.stat_result) -> reader.Examined:
        falls.append(p)
        return None, None

    monkeypatch.setattr(reader, "full", full)
    assert reader.examine(str(path), old) == (None, None) and falls == [str(path)]


def test_the_scan_reports_what_the_full_path_reports(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for i, fmt in enumerate(["vhd", "vhdx", "vhdx"]):
        folder = tmp_path / f"vm{i}"
        folder.mkdir()
        build_chain(folder, fmt, size=8 * MiB, children=2, writes=4, seed=i)
    (tmp_path / "vm1" / "broken.vhdx").write_bytes(b"vhdxfile" + bytes(4096))
    _damaged(7, tmp_path / "vm2", "vhd")

    def report() -> dict[str, Any]:
        r = scan.scan([str(tmp_path)], reserve=0, processes=0)
        d = r.to_dict()
        for chain in d["chains"]:
            chain.pop("oldest_snapshot_age_seconds")
        return {"chains": d["chains"], "unreadable": r.unreadable,
                "disks": {p: f.to_dict() for p, f in r.disks.items()}}

    fast = report()
    monkeypatch.setattr(reader, "examine_all",
                        lambda items: [reader.full(p, st) for p, st in items])
    assert report() == fast


def test_used_indices_finds_every_used_entry() -> None:
    rnd = random.Random(5)
    for _ in range(400):
        n = rnd.choice([1, 15, 16, 17, 1023, 1024, 1025, 65024, rnd.randrange(1, 5000)])
        raw = bytearray(b"\xff" * (4 * n))
        for _ in range(rnd.choice([0, 1, 3, 50, n])):
            i = rnd.randrange(n)
            value = rnd.choice([0, 0xFFFFFFFE, 0x00FFFFFF, 0xFFFFFF00, rnd.getrandbits(32)])
            raw[4 * i:4 * i + 4] = struct.pack(">I", value)
        want = [i for i in range(n) if raw[4 * i:4 * i + 4] != b"\xff" * 4]
        assert used_indices(bytes(raw)) == want


def test_a_registered_format_leaves_the_files_to_the_full_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A format of its own with a probe: the reader, which knows only VHD and VHDX, must not
    # decide which files are disks.
    (tmp_path / "disk.mine").write_bytes(b"MINE" + bytes(4092))
    build_chain(tmp_path, "vhd", size=8 * MiB, children=0, writes=2)
    mine = formats.Format("mine", "MINE", (".mine",), formats.RAW.layer_class,
                          probe=lambda fd, size: os.pread(fd, 4, 0) == b"MINE")
    items = [(str(p), os.lstat(p)) for p in sorted(tmp_path.iterdir())]
    falls: list[str] = []
    real_full = reader.full

    def counting(p: str, s: os.stat_result) -> reader.Examined:
        falls.append(p)
        return real_full(p, s)

    monkeypatch.setattr(reader, "full", counting)
    with formats.registered(mine):
        got = reader.examine_all(items)
    assert len(falls) == len(items)
    found = {Path(f.path).name: f.fmt for f, _ in got if f is not None}
    assert found == {"disk.mine": "mine", "base.vhd": "vhd"}
