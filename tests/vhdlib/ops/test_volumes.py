"""Real small volumes (tmpfs): the space check, a volume that fills mid-run, an archive on
another volume. Needs root to mount; CI runs as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import tmpfs
from tests.chains import build_chain, file_sha256, read_all
from vhdlib import journal, ops
from vhdlib.errors import InsufficientSpaceError

MiB = 1 << 20
volume = tmpfs.volume  # the fixture: real tmpfs volumes (shared with the scan tests)


def _fill(path: Path, leave: int) -> None:
    """Write a file that leaves about ``leave`` bytes free on ``path``'s volume."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    with open(path, "wb") as f:
        remaining = max(0, free - leave)
        while remaining > 0:
            n = min(MiB, remaining)
            try:
                f.write(b"\1" * n)
                f.flush()
            except OSError:
                break
            remaining -= n


def test_space_is_checked_before_any_write(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("small", 64)
    chain = build_chain(vol, "vhd", size=24 * MiB, children=2)
    before = {p.name: file_sha256(p) for p in chain.paths}
    op = ops.prepare("remediate", str(chain.newest), type="fixed")
    need = op.plan.space[0]["needed_bytes"]
    assert isinstance(need, int) and need >= 24 * MiB
    # Leave one MiB less than the plan needs.
    _fill(vol / "hog", need - MiB)
    with pytest.raises(InsufficientSpaceError) as info:
        op.run()
    assert str(need) in str(info.value)
    assert {p.name: file_sha256(p) for p in chain.paths} == before
    assert sorted(p.name for p in vol.iterdir()) == sorted([*before, "hog"])


def test_volume_filling_mid_run_fails_cleanly_then_resumes(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("fills", 64)
    chain = build_chain(vol, "vhd", size=16 * MiB, children=2)
    before = {p.name: file_sha256(p) for p in chain.paths}
    op = ops.prepare("remediate", str(chain.newest), type="dynamic", delete=True)
    assert op.plan.to_dict()["space_ok"]
    hog = vol / "hog"
    filled = []

    def progress(p: object) -> None:
        # Something else fills the volume once the copy has started.
        if getattr(p, "phase", "") == "copy" and not filled:
            _fill(hog, 0)
            filled.append(True)

    with pytest.raises(InsufficientSpaceError, match="resume"):
        op.run(progress=progress, chunk_bytes=512 << 10)
    assert filled
    # Originals untouched; the journal waits for a resume.
    assert {p.name: file_sha256(p) for p in chain.paths} == before
    assert read_all(chain.newest) == chain.ref
    jp = journal.journal_path_for(str(chain.base))
    assert os.path.exists(jp)
    hog.unlink()
    result = ops.resume(jp).run()
    assert result["status"] == "done"
    assert read_all(chain.base) == chain.ref
    assert not os.path.exists(jp)


def test_archive_on_another_volume_is_copied_and_counted(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("disks", 128)
    other: Path = volume("archive", 64)
    chain = build_chain(vol, "vhd", size=16 * MiB, children=2)
    before = {p.name: file_sha256(p) for p in chain.paths}
    op = ops.prepare("remediate", str(chain.newest), archive=str(other / "old"))
    volumes = {v["volume"]: v for v in op.plan.space}
    assert any(str(other) in path for path in volumes)
    arch_need = next(v for p, v in volumes.items() if str(other) in p)["needed_bytes"]
    assert arch_need >= sum(os.path.getsize(p) for p in chain.paths)
    op.run()
    assert {p.name: file_sha256(other / "old" / p.name) for p in chain.paths} == before
    assert read_all(other / "old" / chain.newest.name) == chain.ref
    assert read_all(chain.base) == chain.ref
