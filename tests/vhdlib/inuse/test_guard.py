"""The in-use guard against real processes holding files open (lease and /proc scan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vhdlib.inuse.holders import holding
from vhdlib import inuse
from vhdlib.errors import FileInUseError, InUseUnknownError, SafetyRefusal
from vhdlib.inuse import lease, procfs
from vhdlib.inuse.model import Purpose

SHM = Path("/dev/shm")


@pytest.fixture(params=["ext4-or-tmp", "tmpfs"])
def folder(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "tmpfs":
        if not SHM.is_dir():
            pytest.skip("no /dev/shm")
        import tempfile
        with tempfile.TemporaryDirectory(dir=SHM) as d:
            yield Path(d)
    else:
        yield tmp_path


@pytest.fixture
def no_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a filesystem without leases: the guard must fall back to /proc."""
    def refuse(path: str, purpose: Purpose) -> bool:
        raise lease.LeaseUnavailable("the filesystem grants no leases")
    monkeypatch.setattr(lease, "is_free", refuse)


def _file(folder: Path, name: str = "disk.vhd") -> Path:
    p = folder / name
    p.write_bytes(b"x" * 8192)
    return p


def test_free_file_passes_with_the_lease(folder: Path) -> None:
    p = _file(folder)
    for purpose in Purpose:
        report = inuse.guard([str(p)], purpose, "merge")
        assert [f.method for f in report.files] == ["lease"]
        assert not report.blocking()
        assert "kernel lease (1 file)" in report.methods()


@pytest.mark.parametrize("method", ["lease", "proc"])
def test_reader_blocks_modify_not_read(folder: Path, method: str,
                                       request: pytest.FixtureRequest) -> None:
    if method == "proc":
        request.getfixturevalue("no_lease")
    p = _file(folder)
    with holding(p, "rb") as proc:
        with pytest.raises(FileInUseError) as ei:
            inuse.guard([str(p)], Purpose.MODIFY, "swap")
        e = ei.value
        assert isinstance(e, SafetyRefusal) and e.exit_code == 5 and e.code == "in_use"
        assert [(h["pid"], h["mode"], h["via"]) for h in e.holders] == \
            [(proc.pid, "read", "fd")]
        assert e.holders[0]["name"].startswith("python")
        assert str(p) in str(e) and f"pid {proc.pid}" in str(e)
        assert ("kernel lease" if method == "lease" else "/proc scan") in str(e)
        # A reader does not stop a consistent copy being read.
        report = inuse.guard([str(p)], Purpose.READ, "convert")
        assert report.files[0].method == method and not report.blocking()
    assert not inuse.guard([str(p)], Purpose.MODIFY, "swap").blocking()


@pytest.mark.parametrize("method", ["lease", "proc"])
def test_writer_blocks_both(folder: Path, method: str, request: pytest.FixtureRequest) -> None:
    if method == "proc":
        request.getfixturevalue("no_lease")
    p = _file(folder)
    with holding(p, "r+b") as proc:
        for purpose in Purpose:
            with pytest.raises(FileInUseError) as ei:
                inuse.guard([str(p)], purpose, "convert")
            assert ei.value.holders[0]["pid"] == proc.pid
            assert ei.value.holders[0]["mode"] == "write"


def test_every_file_and_holder_is_named(tmp_path: Path) -> None:
    a, b, c = _file(tmp_path, "a.vhd"), _file(tmp_path, "b.avhd"), _file(tmp_path, "c.avhd")
    with holding(a, "rb") as pa, holding(c, "r+b") as pc, pytest.raises(FileInUseError) as ei:
        inuse.guard([str(a), str(b), str(c)], Purpose.MODIFY, "retire")
    got = {(h["path"], h["pid"]) for h in ei.value.holders}
    assert got == {(str(a), pa.pid), (str(c), pc.pid)}
    assert str(b) not in str(ei.value)


def test_a_mapping_without_a_descriptor_is_seen(tmp_path: Path, no_lease: None) -> None:
    p = _file(tmp_path)
    with holding(p, "rb", how="map") as proc, pytest.raises(FileInUseError) as ei:
        inuse.guard([str(p)], Purpose.MODIFY, "swap")
    assert ei.value.holders[0]["pid"] == proc.pid and ei.value.holders[0]["via"] == "mmap"


def test_a_renamed_file_is_matched_by_inode(tmp_path: Path, no_lease: None) -> None:
    p = _file(tmp_path)
    with holding(p, "rb") as proc:
        moved = tmp_path / "moved.vhd"
        p.rename(moved)
        scan = procfs.scan({procfs.file_key(str(moved)): str(moved)})
        assert [h.pid for h in scan.holders[procfs.file_key(str(moved))]] == [proc.pid]


def test_own_descriptors_are_not_others(tmp_path: Path, no_lease: None) -> None:
    p = _file(tmp_path)
    with open(p, "rb"):
        assert not inuse.guard([str(p)], Purpose.MODIFY, "swap").blocking()


def test_own_descriptors_do_not_block_the_lease_either(tmp_path: Path) -> None:
    p = _file(tmp_path)
    with open(p, "rb"):
        report = inuse.guard([str(p)], Purpose.MODIFY, "swap")
        assert report.files[0].method == "lease+proc" and not report.blocking()
        with holding(p, "rb") as proc, pytest.raises(FileInUseError) as ei:
            inuse.guard([str(p)], Purpose.MODIFY, "swap")
        assert [h["pid"] for h in ei.value.holders] == [proc.pid]


def test_an_opener_the_scan_cannot_see_still_blocks(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # As for a process in another PID namespace: the kernel refuses the lease, /proc
    # shows no one. The kernel's answer stands.
    p = _file(tmp_path)
    monkeypatch.setattr(procfs, "scan", lambda paths, **kw: procfs.Scan())
    with holding(p, "rb"), pytest.raises(FileInUseError, match="unidentified opener"):
        inuse.guard([str(p)], Purpose.MODIFY, "swap")


def test_unreadable_processes_make_the_scan_refuse(tmp_path: Path, no_lease: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    p = _file(tmp_path)
    real = procfs.scan

    def partial(paths: dict[tuple[int, int], str], **kw: object) -> procfs.Scan:
        out = real(paths)
        out.unreadable.append(1)
        return out
    monkeypatch.setattr(procfs, "scan", partial)
    with pytest.raises(InUseUnknownError, match="cannot be read"):
        inuse.guard([str(p)], Purpose.MODIFY, "swap")


def test_missing_files_are_skipped(tmp_path: Path) -> None:
    report = inuse.guard([str(tmp_path / "gone.vhd")], Purpose.MODIFY, "retire")
    assert report.files == [] and not report.blocking()
