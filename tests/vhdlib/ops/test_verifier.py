"""The output is verified behind the copy (fixed VHD, raw): a corrupted window is caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chains import build_chain, read_all
from vhdlib import ops
from vhdlib.errors import ImageError
from vhdlib.extents import ExtentKind
from vhdlib.ops import windows

MiB = 1 << 20


def flip_byte(path: str | Path, offset: int) -> None:
    """Invert the byte at ``offset`` of the file (the corruption the verifier must catch)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def assert_caught_behind_the_copy(op: ops.Operation, chain: Any, dest: Path) -> None:
    """The verification failure came during the copy, not in a verify pass after it; the
    chain is untouched and nothing was published."""
    from vhdlib import journal
    assert journal.load(op.journal_path)["phase"] == "copy"
    assert read_all(chain.newest) == chain.ref
    assert not dest.exists()


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 MiB windows: a 16 MiB disk spans many checkpoints.
    monkeypatch.setattr(windows, "WINDOW", MiB)


def test_windows_are_verified_while_copying(tmp_path: Path, small_windows: None) -> None:
    chain = build_chain(tmp_path, "vhd", size=16 * MiB, writes=80)
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhd"), type="fixed")
    seen: list[tuple[str, int, int]] = []

    def checkpoint(state: dict[str, Any]) -> None:
        seen.append((state["phase"], int(state.get("verified", 0)), int(state["cursor"])))

    op.run(on_checkpoint=checkpoint, chunk_bytes=64 << 10)
    during_copy = [v for phase, v, _ in seen if phase == "copy"]
    assert during_copy and max(during_copy) > 0  # verified in the background
    assert all(v <= c for phase, v, c in seen if phase == "copy")  # only copied windows
    assert read_all(tmp_path / "o.vhd") == chain.ref


def test_a_corrupted_window_is_caught_behind_the_copy(tmp_path: Path,
                                                      small_windows: None) -> None:
    chain = build_chain(tmp_path, "vhd", size=16 * MiB, writes=80)
    import vhdlib
    with vhdlib.open(str(chain.newest)) as disk:
        data = [e for e in disk.extents() if e.kind is ExtentKind.DATA]
    partial = str(tmp_path / "o.vhd") + ".vhdmend-partial"
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhd"), type="fixed")
    corrupted: list[int] = []

    def checkpoint(state: dict[str, Any]) -> None:
        # A window copied and checkpointed but not verified yet: something flips a byte.
        verified, cursor = int(state.get("verified", 0)), int(state["cursor"])
        if state["phase"] != "copy" or corrupted or verified >= cursor:
            return
        for w in range(verified, cursor):
            hit = next((e for e in data if w * MiB <= e.offset < (w + 1) * MiB), None)
            if hit is not None and state["digests"].get(str(w)):
                flip_byte(partial, hit.offset)
                corrupted.append(w)
                return

    with pytest.raises(ImageError, match="verification failed: window"):
        op.run(on_checkpoint=checkpoint, chunk_bytes=64 << 10)
    assert corrupted
    assert_caught_behind_the_copy(op, chain, tmp_path / "o.vhd")


@pytest.mark.parametrize("out_fmt", ["vhd", "vhdx"])
def test_dynamic_outputs_are_verified_behind_the_copy(tmp_path: Path, small_windows: None,
                                                      out_fmt: str) -> None:
    # A dynamic output's blocks are appended and never move: it is verified behind the
    # copy too, opened at each checkpoint (VHDX: with the log of the open session).
    chain = build_chain(tmp_path, "vhd", size=16 * MiB, writes=80)
    out = tmp_path / f"o.{out_fmt}"
    op = ops.prepare("convert", str(chain.newest), str(out), type="dynamic",
                     block_size=MiB)
    seen: list[tuple[str, int, int]] = []

    def checkpoint(state: dict[str, Any]) -> None:
        seen.append((state["phase"], int(state.get("verified", 0)), int(state["cursor"])))

    op.run(on_checkpoint=checkpoint, chunk_bytes=64 << 10)
    during_copy = [v for phase, v, _ in seen if phase == "copy"]
    assert during_copy and max(during_copy) > 0
    assert all(v <= c for phase, v, c in seen if phase == "copy")
    assert read_all(out) == chain.ref


@pytest.mark.parametrize("out_fmt", ["vhd", "vhdx"])
def test_a_corrupted_dynamic_window_is_caught_behind_the_copy(
        tmp_path: Path, small_windows: None, out_fmt: str) -> None:
    chain = build_chain(tmp_path, "vhd", size=16 * MiB, writes=80)
    out = tmp_path / f"o.{out_fmt}"
    partial = str(out) + ".vhdmend-partial"
    op = ops.prepare("convert", str(chain.newest), str(out), type="dynamic",
                     block_size=MiB)
    corrupted: list[int] = []

    def checkpoint(state: dict[str, Any]) -> None:
        # A checkpointed window not verified yet: flip a stored byte of it in the file.
        verified, cursor = int(state.get("verified", 0)), int(state["cursor"])
        if state["phase"] != "copy" or corrupted or verified >= cursor:
            return
        import vhdlib
        with vhdlib.open(partial, resolve_parents=False, fmt=out_fmt) as written:
            for w in range(verified, cursor):
                if not state["digests"].get(str(w)):
                    continue
                hit = next((e for e in written.extents(w * MiB, MiB)
                            if e.kind is ExtentKind.DATA), None)
                if hit is None:
                    continue
                assert hit.file_offset is not None
                flip_byte(partial, hit.file_offset)
                corrupted.append(w)
                return

    with pytest.raises(ImageError, match="verification failed: window"):
        op.run(on_checkpoint=checkpoint, chunk_bytes=64 << 10)
    assert corrupted
    assert_caught_behind_the_copy(op, chain, out)


@pytest.mark.parametrize("out_type", ["fixed", "dynamic"])
def test_bytes_where_the_source_has_no_data_are_caught(tmp_path: Path, fmt: str,
                                                       out_type: str) -> None:
    """The output must read zeros where the source stores nothing (unallocated, or no
    window data at all): a block written there after the copy fails the verify phase."""
    chain = build_chain(tmp_path, fmt, size=16 * MiB, writes=6, children=1)
    import vhdlib
    with vhdlib.open(str(chain.newest)) as disk:
        data = [(e.offset, e.end) for e in disk.extents() if e.kind is ExtentKind.DATA]
    at = next(b for b in range(0, 16 * MiB, MiB)
              if not any(s < b + MiB and b < e for s, e in data))
    out = tmp_path / f"o.{fmt}"
    op = ops.prepare("convert", str(chain.newest), str(out), type=out_type, block_size=MiB)
    seen: list[str] = []
    assert op.run(on_checkpoint=lambda state: seen.append(str(state["phase"])),
                  pause=lambda: seen[-1] == "verify")["status"] == "paused"
    from vhdlib.formats import open_layer
    with open_layer(str(out) + ".vhdmend-partial", writable=True, fmt=fmt) as layer:
        layer.write(at, b"\x5a" * 4096)
        layer.flush()
    with pytest.raises(ImageError, match="verification failed: window"):
        ops.resume(op.journal_path).run()
    assert read_all(chain.newest) == chain.ref
    assert not out.exists()
