"""The copy engine's verify read: reading only what the output stores gives the digest a
full re-read gives, and a byte the output holds where the source has no data changes it
(the check that "verified" still means every byte was compared)."""

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


def stray_outside(disk: Disk, index: int, read_from: Disk) -> bool:
    """True when ``read_from`` reads a non-zero byte in window ``index`` where ``disk``
    has no DATA (the output holds something the source does not)."""
    start = index * windows.WINDOW
    end = min(disk.virtual_size, start + windows.WINDOW)
    pos = start
    for ext in [*disk.extents(start, end - start), None]:
        if ext is not None and ext.kind is not ExtentKind.DATA:
            continue
        stop = end if ext is None else ext.offset
        if stop > pos and any(read_from.read(pos, stop - pos)):
            return True
        if ext is not None:
            pos = ext.end
    return False


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
        stray = clean = 0
        for index in range(windows.window_count(src.virtual_size)):
            # Equal over the source's DATA, and beyond it the output must read zeros (the
            # sparse chain read against the dense one holds plenty beyond).
            for source, out in ((src, other), (other, src)):
                want = full_reread_digest(source, index, out)
                got = windows.process_window(source, index, None, buf, read_from=out)
                assert got[1] == want[1], index
                if stray_outside(source, index, out):
                    assert got[0] != want[0], index
                    stray += 1
                else:
                    assert got[0] == want[0], index
                    clean += 1
            want = full_reread_digest(src, index, other)
            # Read against itself, the verify digest is the copy's digest.
            copy_crc = windows.process_window(src, index, None)[0]
            assert windows.process_window(src, index, None, buf, read_from=same)[0] == \
                copy_crc == full_reread_digest(src, index, same)[0]
            nonzero += want[0] != 0
        assert nonzero >= 2  # the comparison saw real data, not only empty windows
        assert stray and clean  # both outcomes were seen


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "page_cache"])
def test_copy_stream_gives_each_window_what_the_window_alone_gives(
        tmp_path: Path, fmt: str, small_units: None, direct: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Read ahead across window boundaries (one thread for the whole copy), every window
    reaches the sink with the same runs, digest and figures as when read on its own, with
    and without dropped ranges, through O_DIRECT or the page cache (with its WILLNEED
    prefetch); the stream refuses a window out of order and stops its thread when closed
    half way."""
    import threading

    from vhdlib.errors import InternalError
    from vhdlib.ops import readahead

    monkeypatch.setattr(readahead, "ENABLED", direct and readahead.ENABLED)

    chain = build_chain(tmp_path, fmt, size=40 * MiB, writes=120, seed=4, max_sectors=600,
                        children=1)
    # Dropped ranges across window and unit edges (PIECE-aligned, as reclaim makes them).
    drop = [[3 * MiB, 5 * MiB], [9 * MiB + 64 * 1024, 9 * MiB + 512 * 1024],
            [20 * MiB, 28 * MiB]]
    with vhdlib.open(str(chain.newest)) as src:
        total = windows.window_count(src.virtual_size)
        for cut in (None, drop):
            alone: list[tuple[windows.WindowResult, list[tuple[int, bytes]]]] = []
            for index in range(total):
                runs: list[tuple[int, bytes]] = []
                res = windows.process_window(
                    src, index, lambda o, d, r=runs: r.append((o, bytes(d))), drop=cut)
                if cut is None:  # against the reference reader, in either I/O mode
                    assert (res.digest, res.read) == full_reread_digest(src, index, src)
                alone.append((res, runs))
            stream = windows.CopyStream(src, 0, cut)
            try:
                for index in range(total):
                    runs = []
                    res = windows.process_window(
                        src, index, lambda o, d, r=runs: r.append((o, bytes(d))), drop=cut,
                        stream=stream)
                    assert (res, runs) == alone[index], index
            finally:
                stream.close()
            assert sum(len(r) for _, r in alone) > 5  # real data went through
        stream = windows.CopyStream(src, 2, drop)
        with pytest.raises(InternalError, match="out of order"):
            windows.process_window(src, 3, None, drop=drop, stream=stream)
        stream.close()
        stream = windows.CopyStream(src, 0, None)
        windows.process_window(src, 0, None, stream=stream)
        stream.close()
        stream.close()
        assert not [t for t in threading.enumerate() if t.name == "vhdmend-read-ahead"]


def test_a_verify_read_forgets_each_output_range_right_after_reading_it(
        tmp_path: Path, fmt: str, small_units: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verify re-read is the output's last use: every file range it reads is handed to
    ``fileio.forget`` (DONTNEED) just after, and only those (never a range not yet read),
    and forgetting changes no digest."""
    from vhdlib import fileio

    chain = build_chain(tmp_path, fmt, size=24 * MiB, writes=60, seed=7, max_sectors=400)
    with vhdlib.open(str(chain.newest)) as src, vhdlib.open(str(chain.newest)) as out:
        buf = bytearray(windows.UNIT)
        plain = [windows.process_window(src, i, None, buf, read_from=out)
                 for i in range(windows.window_count(src.virtual_size))]
        events: list[tuple[str, int, int, int]] = []
        for layer in out.layers:
            def reading(file_offset: int, view: memoryview, layer: object = layer,
                        real: object = layer.pread_into) -> None:
                events.append(("read", layer.fd, file_offset, len(view)))  # type: ignore
                real(file_offset, view)  # type: ignore[operator]

            monkeypatch.setattr(layer, "pread_into", reading)
        monkeypatch.setattr(fileio, "forget",
                            lambda fd, off, n: events.append(("forget", fd, off, n)))
        again = [windows.process_window(src, i, None, buf, read_from=out)
                 for i in range(len(plain))]
    assert again == plain
    reads = [e for e in events if e[0] == "read"]
    assert len(reads) > 3
    # Each read is followed at once by the forget of exactly its range.
    assert events == [e for r in reads for e in (r, ("forget", *r[1:]))]
