"""Positional I/O: the native calls and the seek-based fallback (what Windows uses) must
behave the same; the whole stack runs through the fallback too."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.chains import build_chain, read_all
from vhdlib import fileio, ops


@pytest.fixture(params=[True, False], ids=["native", "fallback"])
def native(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(fileio, "NATIVE", request.param)
    return bool(request.param)


def test_positional_calls(tmp_path: Path, native: bool) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        assert fileio.pwrite(fd, b"hello", 10) == 5
        assert fileio.pwritev(fd, [b"ab", memoryview(b"cd")], 0) == 4
        assert fileio.pread(fd, 100, 0) == b"abcd" + bytes(6) + b"hello"
        a, b = bytearray(3), bytearray(20)
        assert fileio.preadv(fd, [a, memoryview(b)], 1) == 14
        assert bytes(a) == b"bcd" and bytes(b[:11]) == bytes(6) + b"hello"
        assert fileio.pread(fd, 4, 100) == b""  # past the end: empty, no error
    finally:
        os.close(fd)


def test_fallback_is_safe_across_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(fileio, "NATIVE", False)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        def writer(k: int) -> None:
            for i in range(200):
                fileio.pwrite(fd, bytes([k]) * 512, (i * 4 + k) * 512)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = fileio.pread(fd, 800 * 512, 0)
        for j in range(800):
            assert data[j * 512:(j + 1) * 512] == bytes([j % 4]) * 512
    finally:
        os.close(fd)


def test_allocate_without_posix_fallocate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.delattr(os, "posix_fallocate")
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        fileio.allocate(fd, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
    finally:
        os.close(fd)


def test_whole_stack_through_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          ) -> None:
    # Given the platform lacks positional I/O (Windows)
    monkeypatch.setattr(fileio, "NATIVE", False)
    from vhdlib.ops import readahead
    monkeypatch.setattr(readahead, "ENABLED", False)
    # When a chain is built, remediated and read back
    chain = build_chain(tmp_path, "vhd", size=16 << 20)
    ops.prepare("remediate", str(chain.newest), type="dynamic", delete=True).run()
    # Then the result is exact
    assert read_all(chain.base) == chain.ref


def test_write_all_loops_and_translates_a_full_volume(tmp_path: Path) -> None:
    from vhdlib.errors import InsufficientSpaceError

    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fileio.write_all(fd, [b"ab", bytearray(b"cd"), memoryview(b"ef")], 10, path=str(path))
        assert os.pread(fd, 6, 10) == b"abcdef" and os.fstat(fd).st_size == 16
    finally:
        os.close(fd)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(InsufficientSpaceError, match="no space left writing at 0"):
            fileio.write_all(full, [b"x" * 512], 0, path="/dev/full")
    finally:
        os.close(full)


def _resident_pages(fd: int, length: int) -> int:
    """Pages of ``fd``'s first ``length`` bytes in the page cache (mincore(2))."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    # A private writable mapping (never written) lets ctypes take its address; mincore
    # reports the file's cached pages for untouched private pages.
    m = mmap.mmap(fd, length, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))  # type: ignore[arg-type]
        vec = (ctypes.c_ubyte * (-(-length // page)))()
        if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(length), vec) != 0:
            pytest.skip("mincore unavailable")
        return sum(v & 1 for v in vec)
    finally:
        m.close()


def test_forget_frees_clean_cached_pages_and_changes_no_byte(tmp_path: Path) -> None:
    """``forget`` (DONTNEED) drops the clean cached pages of a file, not another's, and
    what the file reads is unchanged; a bad descriptor or an empty range is ignored."""
    if not hasattr(os, "POSIX_FADV_DONTNEED"):
        pytest.skip("no posix_fadvise")
    data = os.urandom(64 << 12)
    fds = []
    for name in ("forgotten", "kept"):
        (tmp_path / name).write_bytes(data)
        fds.append(os.open(tmp_path / name, os.O_RDONLY))
    try:
        for fd in fds:
            os.fsync(fd)  # clean pages: the only ones DONTNEED frees
            assert os.pread(fd, len(data), 0) == data
        if min(_resident_pages(fd, len(data)) for fd in fds) < 64:
            pytest.skip("the page cache did not keep the files' pages")
        # Whole files: a large folio (ext4 on recent kernels) goes only when all of it does.
        fileio.forget(fds[0], 0, len(data))
        after = _resident_pages(fds[0], len(data))
        if after == 64:
            pytest.skip("this file system keeps its pages (tmpfs): DONTNEED is a no-op")
        assert after == 0 and _resident_pages(fds[1], len(data)) == 64
        assert os.pread(fds[0], len(data), 0) == data
        fileio.forget(fds[0], 0, 0)
    finally:
        for fd in fds:
            os.close(fd)
    fileio.forget(fds[0], 0, 4096)  # closed: ignored
