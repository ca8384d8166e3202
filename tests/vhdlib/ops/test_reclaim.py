"""--reclaim fs end to end: guest disks built by e2fsprogs, ntfs-3g and sgdisk, made into
VHD/VHDX by qemu-img (and a chain by vhdmend), then converted, remediated and compacted.

After the operation: every block the guest tools call wholly free is gone (qemu-img map
shows no data there) and reads zeros, every other byte is identical, e2fsck -fn and
ntfsfix -n are clean on the result, and every file reads identical."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import vhdlib
from tests.conftest import require_tool
from tests.vhdlib.ops.test_resume import run_with_crashes
from tests.vhdlib.volume import guests
from tests.vhdlib.volume.test_partitions import ebr_in_logical_disk, gpt_over_backup_disk
from tests.vhdmend.helpers import run_cli
from vhdlib import journal, ops
from vhdlib.errors import (
    ChangedInputError,
    DependentChildrenError,
    ImageError,
    UsageError,
    VhdlibError,
)
from vhdlib.extents import SegmentState
from vhdlib.formats import open_layer
from vhdlib.layer import BlockStore
from vhdmend.sizes import human_size

MiB = guests.MiB
SIZE = 80 * MiB
NTFS_AT, NTFS_LEN = MiB, 40 * MiB
EXT_AT, EXT_LEN = 41 * MiB, 36 * MiB
IDS = {"uuid": "0f0e0d0c-0b0a-0908-0706-050403020100", "timestamp": 1750000000}


def _disk(tmp: Path, name: str, ntfs: Path, ext: Path) -> Path:
    disk = tmp / name
    guests.stale(disk, SIZE, seed=9)
    guests.run("sgdisk", "-o", "-n", f"1:{NTFS_AT // 512}:+{NTFS_LEN // 512}", "-t", "1:0700",
               "-n", f"2:{EXT_AT // 512}:+{EXT_LEN // 512}", "-t", "2:8300", disk)
    guests.place(disk, NTFS_AT, ntfs)
    guests.place(disk, EXT_AT, ext)
    return disk


def _truth(ntfs: Path, ext: Path) -> list[tuple[int, int]]:
    return guests.merge([(NTFS_AT + s, NTFS_AT + e) for s, e in guests.ntfs_free(ntfs)]
                        + [(EXT_AT + s, EXT_AT + e) for s, e in guests.dumpe2fs_free(ext)])


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``before``: the base's guest; ``after``: the same guest once it deleted a 6 MiB file
    on ext4 and wrote a new file on NTFS (what a snapshot child holds)."""
    tmp = tmp_path_factory.mktemp("reclaim")
    src = guests.files(tmp / "src", {"keep": 3 * MiB + 5, "more": 6 * MiB, "gone": 9 * MiB,
                                     "new": 2 * MiB})
    ntfs = tmp / "ntfs.img"
    guests.stale(ntfs, NTFS_LEN, seed=2)
    guests.mkntfs(ntfs, 4096, "-p", str(NTFS_AT // 512))
    guests.ntfscp(ntfs, src / "keep", "keep")
    ext = tmp / "ext.img"
    guests.stale(ext, EXT_LEN, seed=4)
    guests.mke2fs(ext, "-t", "ext4", src=src)
    guests.debugfs_w(ext, "rm gone", "rm new")
    before = _disk(tmp, "before.img", ntfs, ext)
    truth_before = _truth(ntfs, ext)
    guests.debugfs_w(ext, "rm more")
    guests.ntfscp(ntfs, src / "new", "new")
    after = _disk(tmp, "after.img", ntfs, ext)
    return {"tmp": tmp, "src": src, "before": before, "after": after,
            "truth_before": truth_before, "truth_after": _truth(ntfs, ext)}


def qemu_convert(src: Path, dest: Path, fmt: str, *opts: str, src_fmt: str = "raw") -> Path:
    require_tool("qemu-img")
    subprocess.run(["qemu-img", "convert", "-f", src_fmt, "-O", fmt, *opts, str(src),
                    str(dest)], check=True)
    return dest


def data_ranges(path: Path, fmt: str) -> list[tuple[int, int]]:
    """Ranges allocated in the image: as qemu-img map reports them for VHD; qemu's VHDX
    driver reports no block status (all "data"), so vhdlib's map is used there."""
    if fmt == "vhdx":
        with vhdlib.open(str(path)) as disk:
            return [(e.offset, e.end) for e in disk.extents() if e.kind.value == "data"]
    out = subprocess.run(["qemu-img", "map", "--output=json", str(path)], check=True,
                         capture_output=True).stdout
    return [(e["start"], e["start"] + e["length"]) for e in json.loads(out) if e["data"]]


def wholly_free_blocks(truth: list[tuple[int, int]], block: int) -> set[int]:
    return {b for s, e in truth for b in range(-(-s // block), e // block)}


def check_result(result: Path, fmt: str, reference: Path, truth: list[tuple[int, int]],
                 block: int, guest: dict, *, dynamic: bool = True) -> int:
    """Everything the module docstring promises; returns how many blocks were dropped."""
    raw = qemu_convert(result, result.with_suffix(".check.raw"), "raw",
                       src_fmt={"vhd": "vpc"}.get(fmt, fmt))
    out, ref = raw.read_bytes(), reference.read_bytes()
    free = wholly_free_blocks(truth, block)
    assert free
    for b in range(len(ref) // block):
        got, want = out[b * block:(b + 1) * block], ref[b * block:(b + 1) * block]
        if b in free:
            assert got.count(0) == len(got), f"free block {b} not dropped"
        else:
            assert got == want, f"kept block {b} differs"
    if dynamic:
        for s, e in data_ranges(result, fmt):
            assert not any(s < (b + 1) * block and b * block < e for b in free), (s, e)
    # The guest's own checkers and readers on the result's partitions.
    part_dir = result.parent / (result.name + ".parts")
    part_dir.mkdir()
    ntfs, ext = part_dir / "ntfs.img", part_dir / "ext.img"
    ntfs.write_bytes(out[NTFS_AT:NTFS_AT + NTFS_LEN])
    ext.write_bytes(out[EXT_AT:EXT_AT + EXT_LEN])
    guests.run("e2fsck", "-fn", ext)
    guests.run("ntfsfix", "-n", ntfs)
    src = guest["src"]
    for name in ("keep",):
        dumped = part_dir / f"{name}.ext"
        guests.run("debugfs", "-R", f"dump /{name} {dumped}", ext)
        assert dumped.read_bytes() == (src / name).read_bytes()
        assert guests.run("ntfscat", ntfs, name) == (src / name).read_bytes()
    return len(free)


@pytest.mark.parametrize(("fmt", "qemu_opts", "out_type", "block"), [
    ("vhdx", ("-o", "subformat=dynamic,block_size=1M"), "dynamic", MiB),
    ("vhd", ("-o", "subformat=dynamic"), "dynamic", 2 * MiB),
    ("vhd", ("-o", "subformat=dynamic"), "fixed", MiB),
])
def test_convert_drops_free_blocks(guest: dict, tmp_path: Path, fmt: str,
                                   qemu_opts: tuple[str, ...], out_type: str,
                                   block: int) -> None:
    src = qemu_convert(guest["before"], tmp_path / f"src.{fmt}", {"vhd": "vpc"}.get(fmt, fmt),
                       *qemu_opts)
    out = tmp_path / f"out.{fmt}"
    op = ops.prepare("convert", str(src), str(out), type=out_type, reclaim="fs",
                     block_size=block if out_type == "dynamic" else None, **IDS)
    report = op.plan.details["reclaim"]
    assert [p["file_system"] for p in report["partitions"]] == ["ntfs", "ext4"]
    op.run()
    dropped = check_result(out, fmt, guest["before"], guest["truth_before"], block, guest,
                           dynamic=out_type == "dynamic")
    assert report["dropped_bytes"] == dropped * block
    if out_type == "dynamic":
        zeros = tmp_path / f"zeros.{fmt}"
        ops.prepare("convert", str(src), str(zeros), type=out_type, block_size=block,
                    **IDS).run()
        assert os.path.getsize(out) < os.path.getsize(zeros) - 10 * MiB


def _child_with(base: Path, after: Path, child: Path) -> None:
    """A differencing child (vhdmend create) holding every 64 KiB that changed."""
    subprocess.run([sys.executable, "-m", "vhdmend", "create", str(child), "--type",
                    "differencing", "--parent", str(base)], check=True, capture_output=True)
    old, new = guests.peek(base.with_suffix(".img"), 0, SIZE), after.read_bytes()
    with open_layer(str(child), writable=True) as layer:
        for at in range(0, SIZE, 64 << 10):
            if old[at:at + (64 << 10)] != new[at:at + (64 << 10)]:
                layer.write(at, new[at:at + (64 << 10)])
        layer.flush()


CHILD = {"vhd": "child.vhd", "vhdx": "child.avhdx"}


@pytest.fixture(scope="module")
def chains(guest: dict) -> dict[str, dict]:
    """fmt -> a chain (a dynamic base by qemu-img, a differencing child by vhdmend) whose
    child holds the newest guest's view: ``newest`` (the child), ``view`` (what it reads),
    ``freed`` (blocks the base's guest used, the newest guest freed and the child leaves to
    the base) and ``stale`` (a block free in both guests that the child wrote junk into,
    as a temp file written and deleted in the snapshot leaves it)."""
    newly = sorted(wholly_free_blocks(guest["truth_after"], MiB)
                   - wholly_free_blocks(guest["truth_before"], MiB))
    # A block free in both views, inside ext4 (the guests' partitions end at 77 MiB).
    stale = max(wholly_free_blocks(guest["truth_after"], MiB)
                & wholly_free_blocks(guest["truth_before"], MiB))
    junk = random.Random(5).randbytes(256 << 10)
    view = bytearray(guest["after"].read_bytes())
    view[stale * MiB + (64 << 10):stale * MiB + (320 << 10)] = junk
    out: dict[str, dict] = {}
    for fmt in ("vhd", "vhdx"):
        folder = guest["tmp"] / f"chain-{fmt}"
        folder.mkdir()
        raw = folder / "base.img"
        raw.write_bytes(guest["before"].read_bytes())
        base = qemu_convert(raw, folder / f"base.{fmt}", {"vhd": "vpc"}.get(fmt, fmt),
                            "-o", "subformat=dynamic")
        child = folder / CHILD[fmt]
        _child_with(base, guest["after"], child)
        with open_layer(str(child), writable=True) as layer:
            layer.write(stale * MiB + (64 << 10), junk)
            layer.flush()
        out[fmt] = {"newest": child, "view": bytes(view), "freed": newly, "stale": stale}
    return out


@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_remediate_a_chain_reclaims_what_the_newest_guest_freed(guest: dict, chains: dict,
                                                                tmp_path: Path,
                                                                fmt: str) -> None:
    """The base still holds the file the child's guest deleted: remediate reads the
    newest view, so those blocks go too, and the new file written in the child stays."""
    chain = chains[fmt]
    with vhdlib.open(str(chain["newest"])) as disk:
        assert disk.read(0, SIZE) == chain["view"]
    out = tmp_path / "new.vhdx"
    ops.prepare("remediate", str(chain["newest"]), str(out), type="dynamic", reclaim="fs",
                block_size=MiB, **IDS).run()
    check_result(out, "vhdx", guest["after"], guest["truth_after"], MiB, guest)
    assert guests.run("ntfscat", out.parent / "new.vhdx.parts" / "ntfs.img", "new") == (
        guest["src"] / "new").read_bytes()
    # What the base's guest still used but the newest guest freed is reclaimed.
    assert len(chain["freed"]) >= 4  # the 6 MiB file


@pytest.mark.parametrize("kind", ["remediate", "convert"])
@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_a_block_the_child_freed_reads_zeros_never_the_parents_data(
        guest: dict, chains: dict, tmp_path: Path, fmt: str, kind: str) -> None:
    # Given a chain whose child's guest freed blocks the base holds data in (the child
    # defines none of their sectors, so the chain reads the base's bytes there), and a
    # free block the child itself wrote junk into
    chain = chains[fmt]
    freed, stale, view = chain["freed"], chain["stale"], chain["view"]
    with open_layer(str(chain["newest"])) as layer:
        for b in freed:
            assert {s.state for s in layer.segments(b * MiB, MiB)} == {SegmentState.ABSENT}
        assert SegmentState.PRESENT in {s.state for s in layer.segments(stale * MiB, MiB)}
    for b in [*freed, stale]:
        assert view[b * MiB:(b + 1) * MiB].count(0) < MiB // 2, b  # not zeros to begin with
    # When the chain is remediated or converted with --reclaim fs to a dynamic VHDX
    out = tmp_path / "out.vhdx"
    ops.prepare(kind, str(chain["newest"]), str(out), type="dynamic", reclaim="fs",
                block_size=MiB, **IDS).run()
    # Then those blocks are unallocated and read zeros, everything else is the newest view
    check_result(out, "vhdx", guest["after"], guest["truth_after"], MiB, guest)
    with vhdlib.open(str(out)) as disk:
        for b in [*freed, stale]:
            assert disk.read(b * MiB, MiB) == bytes(MiB), b


@pytest.mark.parametrize(("fmt", "opts", "block"), [
    ("vhd", "subformat=dynamic", 2 * MiB), ("vhdx", "subformat=dynamic,block_size=1M", MiB)])
def test_compact_in_place(guest: dict, tmp_path: Path, fmt: str, opts: str,
                          block: int) -> None:
    path = qemu_convert(guest["before"], tmp_path / f"disk.{fmt}",
                        {"vhd": "vpc"}.get(fmt, fmt), "-o", opts)
    twin = tmp_path / f"twin.{fmt}"
    twin.write_bytes(path.read_bytes())
    ops.prepare("compact", str(twin)).run()
    op = ops.prepare("compact", str(path), reclaim="fs")
    assert op.plan.details["reclaim"]["reclaimable_blocks"] > 10
    result = op.run()
    assert result["dropped_blocks"] >= op.plan.details["reclaim"]["reclaimable_blocks"]
    assert os.path.getsize(path) < os.path.getsize(twin) - 10 * MiB
    guests.run("vhdiinfo", path)  # libvhdi opens the compacted file
    check_result(path, fmt, guest["before"], guest["truth_before"], block, guest)


@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_compact_refuses_a_differencing_disk(guest: dict, tmp_path: Path, fmt: str) -> None:
    base = qemu_convert(guest["before"], tmp_path / f"base.{fmt}",
                        {"vhd": "vpc"}.get(fmt, fmt), "-o", "subformat=dynamic")
    child = tmp_path / CHILD[fmt]
    subprocess.run([sys.executable, "-m", "vhdmend", "create", str(child), "--type",
                    "differencing", "--parent", str(base)], check=True, capture_output=True)
    before = child.read_bytes()
    with pytest.raises(UsageError, match="parent's data"):
        ops.prepare("compact", str(child), reclaim="fs")
    assert child.read_bytes() == before and not os.path.exists(f"{child}.vhdmend.json")
    # ... and the base, which the child depends on.
    with pytest.raises(DependentChildrenError):
        ops.prepare("compact", str(base), reclaim="fs")
    ops.prepare("compact", str(base))  # zeros stays allowed: it changes no content


def test_unknown_mode_is_a_usage_error(guest: dict, tmp_path: Path) -> None:
    src = qemu_convert(guest["before"], tmp_path / "src.vhdx", "vhdx")
    with pytest.raises(UsageError, match="reclaim"):
        ops.prepare("convert", str(src), str(tmp_path / "o.vhdx"), reclaim="all")


def test_crash_and_resume_is_bit_identical(guest: dict, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = qemu_convert(guest["before"], tmp_path / "src.vhdx", "vhdx", "-o",
                       "subformat=dynamic,block_size=1M")
    a, b = tmp_path / "a.vhdx", tmp_path / "b.vhdx"
    ops.prepare("convert", str(src), str(a), type="dynamic", block_size=MiB, reclaim="fs",
                **IDS).run(chunk_bytes=256 << 10)
    op = ops.prepare("convert", str(src), str(b), type="dynamic", block_size=MiB,
                     reclaim="fs", **IDS)
    assert run_with_crashes(monkeypatch, op, seed=13) >= 1
    assert a.read_bytes() == b.read_bytes()


def test_cli_info_fs_and_plan(guest: dict, tmp_path: Path) -> None:
    path = qemu_convert(guest["before"], tmp_path / "disk.vhdx", "vhdx")
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "vhdmend", "info", "--fs", "--json",
                          str(path)], check=True, capture_output=True, env=env).stdout
    volumes = json.loads(out)["volumes"]
    assert [p["file_system"] for p in volumes["partitions"]] == ["ntfs", "ext4"]
    text = subprocess.run([sys.executable, "-m", "vhdmend", "compact", "--reclaim", "fs",
                           "--plan", str(path)], check=True, capture_output=True,
                          text=True).stdout
    assert "ntfs, clusters 4.0 KiB" in text and "reclaimable" in text


# --- in-place compact --reclaim fs: identity, verification, crashes ----------------------

COMPACT_FORMATS = [("vhd", "subformat=dynamic", 2 * MiB),
                   ("vhdx", "subformat=dynamic,block_size=1M", MiB)]


def _compactable(guest: dict, tmp: Path, fmt: str, opts: str) -> Path:
    return qemu_convert(guest["before"], tmp / f"disk.{fmt}", {"vhd": "vpc"}.get(fmt, fmt),
                        "-o", opts)


def _boot_and_write(path: Path, guest: dict, block: int) -> set[int]:
    """What the guest booted from ``path`` does meanwhile: it deletes a file on ext4 and
    writes a new one on NTFS (``before`` -> ``after``), every changed 64 KiB written in
    place. Returns the blocks it wrote."""
    old, new = guest["before"].read_bytes(), guest["after"].read_bytes()
    written: set[int] = set()
    with open_layer(str(path), writable=True) as layer:
        for at in range(0, SIZE, 64 << 10):
            if old[at:at + (64 << 10)] != new[at:at + (64 << 10)]:
                layer.write(at, new[at:at + (64 << 10)])
                written.add(at // block)
        layer.flush()
    return written


@pytest.mark.parametrize(("fmt", "opts", "block"), COMPACT_FORMATS)
def test_compact_refuses_a_disk_written_between_plan_and_run(guest: dict, tmp_path: Path,
                                                              fmt: str, opts: str,
                                                              block: int) -> None:
    # Given a plan, then the guest writing a new file into space the plan calls free
    path = _compactable(guest, tmp_path, fmt, opts)
    op = ops.prepare("compact", str(path), reclaim="fs")
    assert _boot_and_write(path, guest, block) & set(op.state.drop_blocks)
    # When the plan runs, it is refused: nothing was dropped, the new file is intact
    with pytest.raises(ChangedInputError, match="changed"):
        op.run()
    with vhdlib.open(str(path)) as disk:
        assert disk.read(0, SIZE) == guest["after"].read_bytes()


@pytest.mark.parametrize(("fmt", "opts", "block"), COMPACT_FORMATS)
def test_compact_resume_refuses_a_disk_written_while_paused(guest: dict, tmp_path: Path,
                                                            fmt: str, opts: str,
                                                            block: int) -> None:
    # Given a compaction paused early in its drop phase
    path = _compactable(guest, tmp_path, fmt, opts)
    op = ops.prepare("compact", str(path), reclaim="fs")
    assert op.run(pause=lambda: True, chunk_bytes=256 << 10)["status"] == "paused"
    cursor = journal.load(op.journal_path)["cursor"]
    size = os.path.getsize(path)
    # When the guest writes into blocks the plan calls free (all allocated in the file: a
    # VHD's size, id and checksums stay; only the guest's own allocation maps tell)
    written = _boot_and_write(path, guest, block)
    assert {b for b in written if b >= cursor} & set(op.state.drop_blocks)
    assert os.path.getsize(path) == size
    # Then the resume is refused before it drops anything more
    with pytest.raises(ChangedInputError, match="changed"):
        ops.resume(op.journal_path).run()
    with vhdlib.open(str(path)) as disk:
        assert disk.read(cursor * block, SIZE - cursor * block) == \
            guest["after"].read_bytes()[cursor * block:]


class _Kill(BaseException):
    """kill -9 at an instant: nothing after it runs."""


def _kill_in(monkeypatch: pytest.MonkeyPatch, op: ops.Operation, phase: str,
             calls: int) -> None:
    """Die at the ``calls``-th write or read of any file made while ``op`` is in ``phase``
    (reads too: the verify phase only reads)."""
    count = {"n": 0}
    for name in ("pwrite", "pwritev", "preadv", "pread"):
        real = getattr(os, name)

        def wrapped(*a: object, _real: object = real) -> object:
            if op.state.phase == phase:
                count["n"] += 1
                if count["n"] > calls:
                    raise _Kill()
            return _real(*a)  # type: ignore[operator]

        monkeypatch.setattr(os, name, wrapped)


@pytest.mark.parametrize(("fmt", "opts", "block"), COMPACT_FORMATS)
def test_compact_kill_and_resume_is_bit_identical(guest: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  fmt: str, opts: str, block: int) -> None:
    """Kills land in every phase (drop, move, verify, truncate), twice each; each resume
    refuses nothing and the file ends as an uninterrupted run leaves it."""
    a = _compactable(guest, tmp_path, fmt, opts)
    b = tmp_path / f"b.{fmt}"
    b.write_bytes(a.read_bytes())
    ops.prepare("compact", str(a), reclaim="fs").run(chunk_bytes=1 << 20)
    op = ops.prepare("compact", str(b), reclaim="fs")
    rnd = random.Random(13)
    killed_in: list[str] = []
    # Reads and writes each phase makes (fewer than an uninterrupted run makes in it).
    calls = {"drop": 40, "move": 20, "verify": 20, "truncate": 1}
    for phase in ("drop", "move", "verify", "truncate") * 2:
        _kill_in(monkeypatch, op, phase, rnd.randint(0, calls[phase]))
        try:
            op.run(chunk_bytes=1 << 20)
        except _Kill:
            killed_in.append(phase)
        finally:
            monkeypatch.undo()
        if not os.path.exists(op.journal_path):
            break  # finished before the kill
        op = ops.resume(op.journal_path)
    else:
        op.run(chunk_bytes=1 << 20)
    assert set(killed_in) == {"drop", "move", "verify", "truncate"}, killed_in
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(("fmt", "opts", "block"), COMPACT_FORMATS)
def test_compact_gives_the_changed_disk_a_new_id(guest: dict, tmp_path: Path, fmt: str,
                                                 opts: str, block: int) -> None:
    """Free blocks read zeros now: a child left in another folder (where the dependents
    search does not look) must no longer resolve to this disk."""
    path = _compactable(guest, tmp_path, fmt, opts)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    child = elsewhere / f"child.{fmt}"
    subprocess.run([sys.executable, "-m", "vhdmend", "create", str(child), "--type",
                    "differencing", "--parent", str(path)], check=True, capture_output=True)
    with open_layer(str(path)) as layer:
        before = layer.link_id
    ops.prepare("compact", str(path), reclaim="fs").run()
    with open_layer(str(path)) as layer:
        assert layer.link_id != before
    with pytest.raises(VhdlibError), vhdlib.open(str(child)) as disk:
        disk.read(0, 512)


def _store_type(path: Path) -> type[BlockStore]:
    with open_layer(str(path)) as layer:
        store = layer.block_store()
    assert store is not None
    return type(store)


def _compact_with(monkeypatch: pytest.MonkeyPatch, path: Path, method: str,
                  wrong: Callable[..., None]) -> pytest.ExceptionInfo[ImageError]:
    """Compact ``path`` with ``--reclaim fs`` while the block store's ``method`` misbehaves
    as ``wrong(store, index, ...)`` does; the verification must say so."""
    op = ops.prepare("compact", str(path), reclaim="fs")
    monkeypatch.setattr(_store_type(path), method, wrong)
    with pytest.raises(ImageError, match="verification failed") as ei:
        op.run()
    return ei


@pytest.mark.parametrize(("fmt", "opts", "block"), COMPACT_FORMATS)
def test_compact_verification_finds_a_free_block_left_in_place(
        guest: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, opts: str,
        block: int) -> None:
    path = _compactable(guest, tmp_path, fmt, opts)
    real_drop = _store_type(path).drop
    skipped: list[int] = []

    def drop(store: BlockStore, index: int) -> None:
        if skipped:  # all but the first free block go
            real_drop(store, index)
        else:
            skipped.append(index)

    ei = _compact_with(monkeypatch, path, "drop", drop)
    assert f"block {skipped[0]}," in str(ei.value) and "zeros" in str(ei.value)


@pytest.mark.parametrize(("fmt", "opts", "block"), COMPACT_FORMATS)
def test_compact_verification_finds_a_block_moved_wrong(
        guest: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, opts: str,
        block: int) -> None:
    path = _compactable(guest, tmp_path, fmt, opts)
    real_move = _store_type(path).move

    def move(store: BlockStore, index: int, new_offset: int) -> None:
        real_move(store, index, new_offset)
        os.pwrite(store.layer.fd, b"\x5a" * 512, new_offset + 4096)  # type: ignore[attr-defined]

    ei = _compact_with(monkeypatch, path, "move", move)
    assert "read differently" in str(ei.value)
    # The journal stays: the disk is what the moves left, nothing is undone silently.
    assert os.path.exists(str(path) + ".vhdmend.json")


# --- vhdmend info --fs: a disk, a VHD chain, a VHDX chain; text and JSON -----------------


def _free_in(truth: list[tuple[int, int]], start: int, length: int) -> int:
    """Bytes of the guest tools' free ranges that lie in ``[start, start + length)``."""
    return sum(max(0, min(e, start + length) - max(s, start)) for s, e in truth)


@pytest.fixture(scope="module")
def info_disks(guest: dict) -> dict[str, tuple[Path, list[tuple[int, int]]]]:
    """name -> (the path ``info`` is given, the guest tools' free ranges of its newest
    view): a dynamic VHD, and VHD and VHDX chains whose child's guest freed and used."""
    tmp = guest["tmp"] / "info"
    tmp.mkdir()
    out: dict[str, tuple[Path, list[tuple[int, int]]]] = {}
    for fmt, child_name in (("vhd", "child.vhd"), ("vhdx", "child.avhdx")):
        folder = tmp / fmt
        folder.mkdir()
        raw = folder / "base.img"
        raw.write_bytes(guest["before"].read_bytes())
        base = qemu_convert(raw, folder / f"base.{fmt}", {"vhd": "vpc"}.get(fmt, fmt),
                            "-o", "subformat=dynamic")
        _child_with(base, guest["after"], folder / child_name)
        out[f"{fmt}-chain"] = (folder / child_name, guest["truth_after"])
        if fmt == "vhd":
            out["vhd"] = (base, guest["truth_before"])
    return out


@pytest.mark.parametrize("name", ["vhd", "vhd-chain", "vhdx-chain"])
def test_cli_info_fs_json(info_disks: dict, name: str) -> None:
    path, truth = info_disks[name]
    r = run_cli("info", "--fs", "--json", path)
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert len(info["chain"]) == (2 if "chain" in name else 1)
    volumes = info["volumes"]
    assert volumes["scheme"] == "gpt" and not volumes["kept_whole"]
    parts = volumes["partitions"]
    assert [(p["file_system"], p["start"], p["length"]) for p in parts] == [
        ("ntfs", NTFS_AT, NTFS_LEN), ("ext4", EXT_AT, EXT_LEN)]
    # The newest view's free space, as ntfs-3g and dumpe2fs count it.
    for p in parts:
        assert not p["kept_whole"]
        assert p["free_bytes"] == _free_in(truth, p["start"], p["length"]), p


@pytest.mark.parametrize("name", ["vhd", "vhd-chain", "vhdx-chain"])
def test_cli_info_fs_text(info_disks: dict, name: str) -> None:
    path, truth = info_disks[name]
    r = run_cli("info", "--fs", path)
    assert r.code == 0, r.err
    if "chain" in name:
        assert "chain (2 files, newest first):" in r.out
    lines = r.out.splitlines()
    head = lines.index("partitions (gpt, 512-byte sectors):")
    ntfs, ext = lines[head + 1], lines[head + 2]
    assert ntfs.startswith(f"  [1] at {NTFS_AT}, 40.0 MiB  ntfs, clusters 4.0 KiB, free ")
    assert ext.startswith(f"  [2] at {EXT_AT}, 36.0 MiB  ext4, clusters ")
    assert "kept whole" not in r.out
    free = human_size(_free_in(truth, EXT_AT, EXT_LEN))
    assert ext.endswith(f"free {free}"), (ext, free)


# --- the partition table's own sectors inside a file system's free space ---------------


@pytest.mark.parametrize("layout", ["ebr", "gpt"])
def test_convert_keeps_table_sectors_in_a_file_systems_free_space(tmp_path: Path,
                                                                  layout: str) -> None:
    """An EBR lying in a logical partition's free blocks, and a backup GPT lying in the
    free blocks of an ext4 that the primary header lets run to the last LBA: the scan keeps
    the whole disk, so the EBR and the backup GPT come through byte for byte."""
    if layout == "ebr":
        raw, ebr = ebr_in_logical_disk(tmp_path)
        table = [(ebr * 512, 512)]
        reason = f"covers the EBR at LBA {ebr}"
    else:
        raw = gpt_over_backup_disk(tmp_path)
        table = [(raw.stat().st_size - 33 * 512, 33 * 512)]  # backup entries and header
        reason = "GPT headers disagree on the last usable LBA"
    src = qemu_convert(raw, tmp_path / "src.vhdx", "vhdx", "-o",
                       "subformat=dynamic,block_size=1M")
    out = tmp_path / "out.vhdx"
    args = ("convert", src, out, "--type", "dynamic", "--block-size", "1M", "--reclaim", "fs")
    plan = run_cli(*args, "--plan")
    assert plan.code == 0 and reason in plan.out, (plan.out, plan.err)
    r = run_cli(*args)
    assert r.code == 0, (r.out, r.err)
    back = qemu_convert(out, tmp_path / "back.img", "raw", src_fmt="vhdx").read_bytes()
    want = raw.read_bytes()
    for at, length in table:
        assert back[at:at + length] == want[at:at + length]
    assert back == want  # the whole disk was kept
