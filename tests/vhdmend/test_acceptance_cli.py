"""Acceptance checks of the CLI (issues 2 and 3) that other tests leave open.

Every command runs as a user runs it: ``python -m vhdmend`` in a subprocess.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.chains import build_chain
from tests.vhdmend.helpers import assert_clean_error, run_cli
from vhdlib import journal, ops, vhdx
from vhdlib.vhdx import structs as S

MIB = 1 << 20
INFO_KEYS = {"format", "type", "virtual_size", "block_size", "file_size", "allocated_bytes",
             "chain"}


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# Requirement (issue 2, 6): info --json has format, type, virtual_size, block_size,
# file_size, allocated_bytes and the chain (newest first), for both formats' chains.
@pytest.mark.parametrize("fmt", ["vhd", "vhdx"])
def test_info_json_on_a_chain(tmp_path: Path, fmt: str) -> None:
    chain = build_chain(tmp_path, fmt, size=8 * MIB, children=2, writes=6)
    r = run_cli("info", chain.newest, "--json")
    assert r.code == 0, r.err
    info = r.json()
    assert set(info) >= INFO_KEYS
    assert info["format"] == fmt and info["type"] == "differencing"
    assert info["virtual_size"] == 8 * MIB
    assert info["file_size"] == chain.newest.stat().st_size
    assert [Path(layer["path"]).name for layer in info["chain"]] == \
        [p.name for p in reversed(chain.paths)]
    for layer, path in zip(info["chain"], reversed(chain.paths), strict=True):
        assert set(layer) >= INFO_KEYS - {"chain"}
        assert layer["file_size"] == path.stat().st_size
        assert 0 < layer["allocated_bytes"] <= layer["file_size"]
        assert layer["block_size"] > 0
    assert info["chain"][-1]["type"] == "dynamic"
    if fmt == "vhd":
        assert "chs_size" in info


# Requirement (issue 2, 6): --plan --json on every operation, resume included; a dry run
# writes nothing.
def test_resume_plan_json_writes_nothing(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhdx", size=8 * MIB, children=2, writes=6)
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhdx"))
    state = op.state.to_dict()
    state["phase"] = "copy"
    journal.save(op.journal_path, state)
    before = _tree(tmp_path)
    r = run_cli("resume", op.journal_path, "--plan", "--json")
    assert r.code == 0, r.err
    plan = r.json()
    assert plan["operation"] == "convert"
    assert plan["steps"] and all("name" in s for s in plan["steps"])
    assert all(v["needed_bytes"] >= 0 for v in plan["space"])
    assert _tree(tmp_path) == before


# Requirement (issue 3): converting a VHDX larger than 2040 GiB to VHD is refused with a
# clear error (usage, exit 2), before anything is written.
def test_convert_oversize_vhdx_to_vhd_is_exit_2(tmp_path: Path) -> None:
    big = tmp_path / "big.vhdx"
    vhdx.create(big, 3 << 40, "dynamic").close()
    before = _tree(tmp_path)
    r = run_cli("convert", big, tmp_path / "big.vhd")
    assert_clean_error(r, 2)
    assert "2040 GiB" in r.err
    assert _tree(tmp_path) == before


# Requirement (issues 2 and 3, bad input): a corrupt VHDX is exit 3 from every command,
# never a traceback, never a write.
@pytest.mark.parametrize("argv", [["info"], ["map"], ["check"], ["check", "--repair"],
                                  ["compact"], ["convert", "{dir}/o.vhdx"],
                                  ["remediate", "--output", "{dir}/r.vhdx"]])
def test_corrupt_vhdx_is_exit_3_and_never_written(tmp_path: Path, argv: list[str]) -> None:
    path = tmp_path / "bad.vhdx"
    layer = vhdx.create(path, 8 * MIB, "dynamic", block_size=MIB)
    layer.write(0, b"\x42" * 4096)
    layer.close()
    data = bytearray(path.read_bytes())
    for off in (S.HEADER1_OFFSET + 50, S.HEADER2_OFFSET + 50):  # both header CRCs wrong
        data[off] ^= 0xFF
    path.write_bytes(bytes(data))
    before = _tree(tmp_path)
    cmd, *rest = argv
    r = run_cli(cmd, path, *(a.format(dir=tmp_path) for a in rest))
    if cmd == "check" and r.code == 1:
        # check may report the damage as a problem rather than refuse to open
        assert "Traceback" not in r.err
    else:
        assert_clean_error(r, 3)
    if "--repair" not in argv:
        assert _tree(tmp_path) == before


# Requirement (issue 2, 5): check reports an interrupted operation's journal (exit 1).
def test_check_reports_interrupted_operation(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=8 * MIB, children=0, writes=6)
    op = ops.prepare("compact", str(chain.base))
    state = op.state.to_dict()
    state["phase"] = op.phases[0]
    journal.save(op.journal_path, state)
    r = run_cli("check", chain.base)
    assert r.code == 1, (r.out, r.err)
    assert "journal" in (r.out + r.err).lower()
    r = run_cli("check", chain.base, "--json")
    assert r.code == 1
    assert "journal" in r.out.lower()


# Requirement (issue 2, 4 and 6): resume refuses changed inputs with exit 5, naming the
# file and what changed.
def test_resume_changed_input_names_what_changed(tmp_path: Path) -> None:
    chain = build_chain(tmp_path, "vhd", size=8 * MIB, children=2, writes=6)
    op = ops.prepare("convert", str(chain.newest), str(tmp_path / "o.vhd"))
    state = op.state.to_dict()
    state["phase"] = "copy"
    journal.save(op.journal_path, state)
    st = chain.newest.stat()
    os.utime(chain.newest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = run_cli("resume", op.journal_path)
    assert_clean_error(r, 5)
    assert chain.newest.name in r.err and "mtime_ns" in r.err
    assert os.path.exists(op.journal_path)  # kept: the operator decides
