"""The copy engine's verify read: reading only what the output stores gives the digest a
full re-read gives (the check that "verified" still means every byte was compared)."""

from __future__ import annotations

from pathlib import Path

import pytest

import vhdlib
from tests.chains import build_chain
from vhdlib.chain import Disk
from vhdlib.extents import ExtentKind
from vhdlib.ops import windows

MiB = 1 << 20


def full_reread_digest(disk: Disk, index: int, read_from: Disk) -> tuple[int, int]:
    """The verify digest as it was first written: every byte of every DATA unit of
    ``disk`` read from ``read_from`` (zeros included), runs found over the whole unit."""
    start = index * windows.WINDOW
    end = min(disk.virtual_size, start + windows.WINDOW)
    crc = read = 0
    for ext in disk.extents(start, end - start):
        if ext.kind is not ExtentKind.DATA:
            continue
        for off, n in windows._cut(ext.offset, ext.end):
            buf = bytearray(n)
            read_from.readinto(off, buf)
            read += n
            for a, b in windows._nonzero_runs(buf, off, n):
                crc = windows.digest_update(crc, off + a, memoryview(buf)[a:b])
    return crc, read


@pytest.fixture
def small_units(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small windows and units: many unit cuts and window edges on a small disk.
    monkeypatch.setattr(windows, "WINDOW", 4 * MiB)
    monkeypatch.setattr(windows, "UNIT", 256 << 10)
    monkeypatch.setattr(windows, "_ZERO_UNIT", bytes(256 << 10))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_verify_digest_equals_a_full_reread(tmp_path: Path, fmt: str, seed: int,
                                            small_units: None) -> None:
    # Two unrelated chains of one size: the first dense (nearly every block allocated),
    # the second sparse, so that over the first's DATA ranges the second has unallocated
    # blocks holding only its children's sector-sized (not PIECE-aligned) DATA extents,
    # and present zeros.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = build_chain(tmp_path / "a", fmt, size=48 * MiB, writes=150, seed=seed,
                    max_sectors=300, children=1)
    b = build_chain(tmp_path / "b", fmt, size=48 * MiB, writes=8, seed=seed + 10,
                    max_sectors=300)
    with vhdlib.open(str(a.newest)) as src, vhdlib.open(str(b.newest)) as other, \
            vhdlib.open(str(a.newest)) as same:
        buf = bytearray(windows.UNIT)
        nonzero = 0
        for index in range(windows.window_count(src.virtual_size)):
            want = full_reread_digest(src, index, other)
            got = windows.process_window(src, index, None, buf, read_from=other)
            assert (got[0], got[1]) == want, index
            # Read against itself, the verify digest is the copy's digest.
            copy_crc = windows.process_window(src, index, None)[0]
            assert windows.process_window(src, index, None, buf, read_from=same)[0] == \
                copy_crc == full_reread_digest(src, index, same)[0]
            nonzero += want[0] != 0
        assert nonzero >= 2  # the comparison saw real data, not only empty windows
