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
