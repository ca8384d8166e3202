"""--reclaim fs outputs are verified: a non-zero byte in a dropped block, or a changed byte
in a kept one, fails the operation with the verification error, never "verified".

The guest is an NTFS volume (mkntfs over stale bytes) as the whole disk, with part of its
free space zeroed so the source stores nothing there: dropped blocks come both over the
source's stale data and over a hole of the source. Two seams put the bad bytes in:

* **a copy that writes where it must not**: the output's write (the copy's sink) is
  wrapped, and once writes 4 KiB of ``0x5a`` into a dropped block ahead of the copy, or
  over bytes of a kept block it has just written; with 1 MiB windows the background
  verifier and the verify phase both take part;
* **damage at rest between the phases**: the run pauses once the copy is done, the
  partial output is changed through vhdlib's writer, and the resumed run's verify phase
  must refuse it.

Either way the source is untouched, nothing is published and the journal stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import vhdlib
from tests.chains import create, file_sha256
from tests.vhdlib.volume import guests
from vhdlib import journal, ops
from vhdlib.errors import ImageError
from vhdlib.extents import ExtentKind
from vhdlib.formats import open_layer
from vhdlib.layer import DiskType
from vhdlib.ops import convert, windows

MiB = guests.MiB
SIZE = 24 * MiB
#: Zeroed in the guest's free space: a dropped block the source stores nothing in.
HOLE = (6 * MiB, 8 * MiB)
BAD = b"\x5a" * 4096
IDS = {"uuid": "0f0e0d0c-0b0a-0908-0706-050403020100", "timestamp": 1750000000}
#: Source block sizes: whole source blocks over HOLE are unallocated.
SOURCE_BLOCK = {"vhd": 2 * MiB, "vhdx": MiB}


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("reclaim-verify")
    image = tmp / "ntfs.img"
    guests.stale(image, SIZE, seed=5)
    guests.mkntfs(image, 4096)
    guests.ntfscp(image, guests.files(tmp / "src", {"a": 3 * MiB}) / "a", "a")
    free = guests.ntfs_free(image)
    assert any(s <= HOLE[0] and HOLE[1] <= e for s, e in free)  # HOLE lies in free space
    guests.patch(image, HOLE[0], bytes(HOLE[1] - HOLE[0]))
    raw = image.read_bytes()
    sources = {}
    for fmt, block in SOURCE_BLOCK.items():
        path = tmp / f"src.{fmt}"
        with create(fmt, path, SIZE, DiskType.DYNAMIC, block_size=block) as layer:
            for at in range(0, SIZE, 64 << 10):  # only non-zero pieces: HOLE stays unallocated
                if any(raw[at:at + (64 << 10)]):
                    layer.write(at, raw[at:at + (64 << 10)])
            layer.flush()
        with vhdlib.open(str(path)) as disk:
            assert disk.read(0, SIZE) == raw
            data = [(e.offset, e.end) for e in disk.extents() if e.kind is ExtentKind.DATA]
        assert not any(s < HOLE[1] and HOLE[0] < e for s, e in data)
        sources[fmt] = {"path": path, "data": data, "sha256": file_sha256(path)}
    return {"raw": raw, "sources": sources}


def _prepare(guest: dict[str, Any], tmp_path: Path, fmt: str, out_type: str
             ) -> tuple[ops.Operation, Path, list[list[int]]]:
    src = guest["sources"][fmt]["path"]
    out = tmp_path / f"out.{fmt}"
    op = ops.prepare("convert", str(src), str(out), type=out_type, reclaim="fs",
                     block_size=MiB if out_type == "dynamic" and fmt == "vhdx" else None,
                     **IDS)
    drop = [list(r) for r in op.state.drop]
    assert any(s <= HOLE[0] and HOLE[1] <= e for s, e in drop)  # the hole is dropped
    return op, out, drop


def _target(guest: dict[str, Any], fmt: str, drop: list[list[int]], where: str) -> int:
    """Where the bad bytes go: a dropped block over the source's stale data, the dropped
    block over the source's hole, or a kept block's data."""
    data = guest["sources"][fmt]["data"]
    if where == "hole":
        return HOLE[0] + 64 * 1024
    if where == "dropped":
        at = next(s for lo, hi in drop for s in range(lo, hi, MiB)
                  if s >= HOLE[1] and any(a <= s and s + MiB <= b for a, b in data))
        assert any(guest["raw"][at:at + len(BAD)])  # stale bytes the copy left out
        return at
    raw = guest["raw"]
    # Kept bytes (hardly a zero among them: the file's data), in no dropped block.
    return next(at for at in range(MiB, SIZE, 64 << 10)
                if raw[at:at + len(BAD)].count(0) < 64
                and not any(s < at + len(BAD) and at < e for s, e in drop))


def _assert_refused(op: ops.Operation, guest: dict[str, Any], fmt: str, out: Path,
                    run: Any) -> str:
    with pytest.raises(ImageError, match="verification failed: window"):
        run()
    src = guest["sources"][fmt]
    assert file_sha256(src["path"]) == src["sha256"]  # the source is untouched
    assert not out.exists()  # nothing published
    return str(journal.load(op.journal_path)["phase"])  # the journal stays


@pytest.mark.parametrize("where", ["dropped", "hole", "kept"])
@pytest.mark.parametrize(("fmt", "out_type"), [
    ("vhd", "fixed"), ("vhd", "dynamic"), ("vhdx", "fixed"), ("vhdx", "dynamic")])
def test_a_copy_writing_where_it_must_not_fails_verification(
        guest: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str,
        out_type: str, where: str) -> None:
    monkeypatch.setattr(windows, "WINDOW", MiB)  # many checkpoints: background verify too
    op, out, drop = _prepare(guest, tmp_path, fmt, out_type)
    at = _target(guest, fmt, drop, where)
    real = convert._WritebackSink.__call__
    done: list[int] = []

    def sink(self: convert._WritebackSink, offset: int, data: memoryview) -> None:
        real(self, offset, data)
        if done:
            return
        if where != "kept":
            # Ahead of the copy (its window is neither copied nor verified yet).
            assert offset < at
            self.out.write(at, BAD)
            done.append(offset)
        elif offset <= at and at + len(BAD) <= offset + len(data):
            self.out.write(at, BAD)  # over the bytes just written
            done.append(offset)

    monkeypatch.setattr(convert._WritebackSink, "__call__", sink)
    phase = _assert_refused(op, guest, fmt, out,
                            lambda: op.run(chunk_bytes=256 << 10))
    assert done and phase in ("copy", "verify")


@pytest.mark.parametrize("where", ["dropped", "hole", "kept"])
@pytest.mark.parametrize(("fmt", "out_type"), [
    ("vhd", "fixed"), ("vhd", "dynamic"), ("vhdx", "fixed"), ("vhdx", "dynamic")])
def test_damage_between_copy_and_verify_fails_verification(
        guest: dict[str, Any], tmp_path: Path, fmt: str, out_type: str, where: str) -> None:
    op, out, drop = _prepare(guest, tmp_path, fmt, out_type)
    at = _target(guest, fmt, drop, where)
    seen: list[str] = []
    paused = op.run(on_checkpoint=lambda state: seen.append(str(state["phase"])),
                    pause=lambda: seen[-1] == "verify")
    assert paused["status"] == "paused"
    assert journal.load(op.journal_path)["verified"] == 0  # nothing verified yet
    partial = str(out) + convert.PARTIAL
    with open_layer(partial, writable=True, fmt=fmt) as layer:
        layer.write(at, BAD)
        layer.flush()
    resumed = ops.resume(op.journal_path)
    assert _assert_refused(resumed, guest, fmt, out, resumed.run) == "verify"


def test_an_undamaged_output_is_verified_and_reads_the_guest_less_its_drops(
        guest: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same runs without the damage pass: the refusals above are the damage's."""
    monkeypatch.setattr(windows, "WINDOW", MiB)
    for fmt, out_type in (("vhd", "dynamic"), ("vhdx", "fixed")):
        op, out, drop = _prepare(guest, tmp_path, fmt, out_type)
        assert op.run(chunk_bytes=256 << 10)["status"] == "done"
        want = bytearray(guest["raw"])
        for s, e in drop:
            want[s:e] = bytes(e - s)
        with vhdlib.open(str(out)) as disk:
            assert disk.read(0, SIZE) == want
        out.unlink()
