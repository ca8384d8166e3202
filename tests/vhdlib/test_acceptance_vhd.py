"""Acceptance checks of the VHD issue that other tests leave open or assert too loosely.

Each test names the requirement it proves. Chains come from :func:`tests.chains.build_chain`
(an in-memory reference model) or are created here through vhdlib's public create().
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import vhdlib
from tests.chains import build_chain, file_sha256, read_all
from vhdlib import journal, ops, vhd
from vhdlib.errors import ChangedInputError, ParentNotFoundError
from vhdlib.formats import open_layer
from vhdlib.vhd.structs import PLATFORM_CODE_W2RU, DynamicHeader, ParentLocator

MIB = 1 << 20
IDENTITY_KEYS = {"path", "size", "mtime_ns", "uuid", "checksum"}


def _only_w2ru(child: Path, text: str) -> None:
    """Leave ``child`` one parent locator, a W2ru holding ``text``, and no parent name."""
    raw = child.read_bytes()[512:1536]
    h = DynamicHeader.parse(raw)
    w2ru = next(loc for loc in h.locators if loc.platform_code == PLATFORM_CODE_W2RU)
    data = text.encode("utf-16-le")
    assert len(data) <= w2ru.space_bytes()
    with open(child, "r+b") as f:
        f.seek(w2ru.data_offset)
        f.write(data.ljust(w2ru.space_bytes(), b"\0"))
    loc = ParentLocator.new(PLATFORM_CODE_W2RU, w2ru.data_space, len(data), w2ru.data_offset)
    h = dataclasses.replace(h, locators=(loc,) + (ParentLocator(),) * 7,
                            parent_unicode_name_raw=bytes(512)).with_checksum()
    with open(child, "r+b") as f:
        f.seek(512)
        f.write(h.serialize())


# Requirement (issue 2, Reading): parents by W2ru, relative to the child's folder, with
# ".\" and "\" separators. The parent lives outside the child's folder (so the search by
# UUID cannot find it) and W2ru is the only locator left, so only W2ru can resolve it.
@pytest.mark.parametrize(("parent_rel", "child_rel", "w2ru"), [
    ("sub/base.vhd", "child.avhd", ".\\sub\\base.vhd"),
    ("sub/base.vhd", "child.avhd", "sub\\base.vhd"),
    ("sub/deeper/base.vhd", "child.avhd", ".\\sub\\deeper\\base.vhd"),
    ("parents/base.vhd", "kids/child.avhd", "..\\parents\\base.vhd"),
    ("parents/base.vhd", "kids/child.avhd", ".\\..\\parents\\base.vhd"),
])
def test_w2ru_alone_resolves_windows_relative_paths(tmp_path: Path, parent_rel: str,
                                                    child_rel: str, w2ru: str) -> None:
    root = tmp_path / "before"
    (root / parent_rel).parent.mkdir(parents=True, exist_ok=True)
    (root / child_rel).parent.mkdir(parents=True, exist_ok=True)
    base = vhd.create(root / parent_rel, 4 * MIB, "dynamic")
    base.write(0, b"\x5a" * 1024)
    child = vhd.create(root / child_rel, None, "differencing", parent=base)
    child.write(512, b"\xc3" * 512)
    base.close()
    child.close()
    _only_w2ru(root / child_rel, w2ru)
    # Move the whole tree: every absolute path is now stale.
    moved = tmp_path / "after"
    shutil.move(root, moved)
    with vhdlib.open(moved / child_rel) as disk:
        assert len(disk.layers) == 2
        assert os.path.samefile(disk.layers[1].path, moved / parent_rel)
        assert disk.read(0, 1024) == b"\x5a" * 512 + b"\xc3" * 512


# Requirement: a missing parent's error lists every location tried (each locator, the
# header's name, the search by UUID), in the message and in ``tried``.
def test_missing_parent_error_lists_every_location(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    base = vhd.create(tmp_path / "p" / "base.vhd", MIB, "dynamic")
    vhd.create(tmp_path / "child.avhd", None, "differencing", parent=base).close()
    base.close()
    os.unlink(tmp_path / "p" / "base.vhd")
    before = file_sha256(tmp_path / "child.avhd")
    with pytest.raises(ParentNotFoundError) as ei:
        vhdlib.open(tmp_path / "child.avhd")
    err = ei.value
    labels = [t.split(" ", 1)[0] for t in err.tried]
    for label in ("W2ru", "W2ku", "name", "search"):
        assert label in labels, err.tried
    assert any(str(tmp_path / "p" / "base.vhd") in t for t in err.tried)
    for t in err.tried:
        assert t in str(err)
    assert err.exit_code == 3
    assert file_sha256(tmp_path / "child.avhd") == before  # never a write


# Requirement (issue 2, 4): a cancelled merge leaves the chain reading exactly as before,
# also when cancelled after several chunks have been written into the ancestor.
@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_merge_cancelled_after_several_chunks_reads_as_before(tmp_path: Path,
                                                              fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, size=24 * MIB, writes=60, max_sectors=512)
    base_sha = file_sha256(chain.base)
    with open_layer(str(chain.base)) as layer:
        base_id = layer.link_id
    op = ops.prepare("merge", str(chain.newest), into=str(chain.base))
    checks = {"n": 0}

    def cancel() -> bool:
        checks["n"] += 1
        return checks["n"] >= 3

    with pytest.raises(vhdlib.Cancelled):
        op.run(cancel=cancel, chunk_bytes=64 << 10)
    assert checks["n"] == 3
    # The ancestor really was written to (this is not a cancel before any work) ...
    assert file_sha256(chain.base) != base_sha
    # ... yet the chain opens with all its layers and reads exactly as before.
    assert all(p.exists() for p in chain.paths)
    with vhdlib.open(str(chain.newest)) as disk:
        assert len(disk.layers) == len(chain.paths)
        assert disk.layers[-1].link_id == base_id
        assert disk.read(0, disk.virtual_size) == chain.ref
    assert not os.path.exists(str(chain.base) + journal.SUFFIX)
    # A new merge is not refused by leftovers and ends with the same content.
    ops.prepare("merge", str(chain.newest), into=str(chain.base), delete=True).run()
    assert read_all(chain.base) == chain.ref


def _first_journal(op: ops.Operation) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []
    op.run(on_checkpoint=lambda _state: seen.append(journal.load(op.journal_path)),
           chunk_bytes=1 << 20)
    assert seen, "no checkpoint was written"
    return seen[0]


# Requirement (issue 2, 4): the journal holds the operation, each input's identity (path,
# size, mtime_ns, UUID, footer checksum), the output's identity and the cursor.
@pytest.mark.parametrize("kind", ["convert", "remediate", "merge", "compact"])
def test_journal_holds_identities_and_cursor(tmp_path: Path, kind: str) -> None:
    chain = build_chain(tmp_path, "vhd", size=16 * MIB, children=0 if kind == "compact" else 2)
    layers = [open_layer(str(p)) for p in reversed(chain.paths)]
    expected = {os.path.abspath(layer.path): layer.identity().to_dict() for layer in layers}
    for layer in layers:
        layer.close()
    if kind == "convert":
        op = ops.prepare("convert", str(chain.newest), str(tmp_path / "out.vhd"))
        want_inputs, want_output = list(expected), str(tmp_path / "out.vhd")
    elif kind == "remediate":
        op = ops.prepare("remediate", str(chain.newest), output=str(tmp_path / "r.vhd"))
        want_inputs, want_output = list(expected), str(tmp_path / "r.vhd")
    elif kind == "merge":
        op = ops.prepare("merge", str(chain.newest), into=str(chain.base), delete=True)
        want_inputs, want_output = list(expected)[:-1], str(chain.base)
    else:
        # In place: the disk is its own input, its identity as planned on.
        op = ops.prepare("compact", str(chain.base))
        want_inputs, want_output = list(expected), str(chain.base)
    state = _first_journal(op)
    assert state["operation"] == kind
    assert "cursor" in state and isinstance(state["cursor"], int)
    assert state["phase"] in op.phases or state["phase"] == "done"
    assert [i["path"] for i in state["inputs"]] == want_inputs
    for ident in state["inputs"]:
        assert set(ident) >= IDENTITY_KEYS
        assert ident == expected[ident["path"]]
    assert state["output"]["path"] == want_output
    assert state["output"]["uuid"]


# Requirement: changed inputs are refused, naming what changed (the file and the field).
def test_changed_input_names_file_and_fields(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=64 * MIB, children=2)
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhd"))
    state = op.state.to_dict()
    state["phase"] = "copy"
    journal.save(op.journal_path, state)
    # Touch only the middle layer's mtime.
    middle = chain.paths[1]
    st = middle.stat()
    os.utime(middle, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ChangedInputError) as ei:
        ops.resume(op.journal_path).run()
    msg = str(ei.value)
    assert middle.name in msg and "mtime_ns" in msg
    assert "size" not in msg.split(":", 1)[1] and "checksum" not in msg
    assert ei.value.exit_code == 5
    # The newest grows a block: its size (and mtime) changed.
    with open_layer(str(chain.newest), writable=True) as layer:
        free = next(b for b in range(layer.virtual_size // (2 * MIB))
                    if all(not (off // (2 * MIB) == b and lay == 3)
                           for lay, off, _ in chain.writes))
        size = layer.file_size
        layer.write(free * 2 * MIB, b"\x01" * 512)
        assert layer.file_size > size
    with pytest.raises(ChangedInputError) as ei:
        ops.resume(op.journal_path).run()
    assert chain.newest.name in str(ei.value) and "size" in str(ei.value)


# Requirement: the plan names the exact extra bytes on each volume. A dynamic output needs
# only the blocks the chain's data touches, not its virtual size; a fixed one all of it.
def test_dynamic_output_needs_only_touched_blocks(tmp_path: Path) -> None:
    size = 1 << 30
    base = vhd.create(tmp_path / "big.vhd", size, "dynamic")
    base.write(100 * MIB, b"\x42" * 4096)
    base.close()
    dyn = ops.prepare("convert", str(tmp_path / "big.vhd"), str(tmp_path / "d.vhd"),
                      type="dynamic")
    need = sum(v["needed_bytes"] for v in dyn.plan.to_dict()["space"])
    assert need < 8 * MIB, dyn.plan.to_dict()["space"]
    dyn.run()
    assert os.path.getsize(tmp_path / "d.vhd") <= need
    fixed = ops.prepare("convert", str(tmp_path / "big.vhd"), str(tmp_path / "f.vhd"),
                        type="fixed", sparse=False)
    need_fixed = sum(v["needed_bytes"] for v in fixed.plan.to_dict()["space"])
    assert need_fixed >= size + 512
