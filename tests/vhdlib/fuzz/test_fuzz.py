"""The fuzzer's fast slice: a few dozen cases through the four commands, and the fuzzer's
own guarantees (reproducible cases, deterministic corpus)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.vhdlib.fuzz import corpus, run
from tests.vhdlib.fuzz.mutate import make_case
from tests.vhdlib.fuzz.structure import structures

#: The slice: enough cases to touch every seed, small enough for well under 60 s.
SLICE_SEED = 20261201
SLICE_CASES = 48


@pytest.fixture(scope="module")
def seeds() -> list[corpus.Seed]:
    return corpus.build()


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_a_case_is_reproduced_from_seed_and_index(seeds, tmp_path: Path) -> None:
    digests = []
    for k in range(2):
        folder = tmp_path / str(k)
        folder.mkdir()
        case = make_case(7, 123, seeds, folder)
        digests.append((_folder_digest(folder), case.mutations, case.top))
    assert digests[0] == digests[1]
    assert digests[0][1], "a case always records its mutations"


def test_generated_seeds_are_byte_identical_when_rebuilt(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VHDMEND_FUZZ_CORPUS", str(tmp_path / "corpus"))
    rebuilt = [s for s in corpus.build() if s.name.startswith("gen-")]
    monkeypatch.delenv("VHDMEND_FUZZ_CORPUS")
    original = [s for s in corpus.build() if s.name.startswith("gen-")]
    assert corpus.digest(rebuilt) == corpus.digest(original)


def test_structure_map_finds_every_kind_in_the_seeds(seeds) -> None:
    kinds: set[str] = set()
    for s in seeds:
        for f in s.files:
            kinds |= {st.kind for st in structures((s.folder / f).read_bytes())}
    # Every structure family the mutations are meant to reach.
    assert {"vhd.footer", "vhd.footer_copy", "vhd.header", "vhd.bat", "vhd.bitmap",
            "vhd.locator_data", "vhdx.header", "vhdx.region_table", "vhdx.bat",
            "vhdx.sector_bitmap", "vhdx.metadata_table", "vhdx.file_parameters",
            "vhdx.virtual_size", "vhdx.parent_locator", "vhdx.log_entry"} <= kinds


def test_runner_reports_exit_codes_and_modified_inputs(seeds, tmp_path: Path) -> None:
    """The spawned runner (a real ``python -m vhdmend``) on an untouched seed: info,
    map and convert succeed, nothing changes; a write to the input is noticed."""
    seed = next(s for s in seeds if s.name == "gen-vhd-chain")
    case, results = run.run_case(0, 0, [seed], tmp_path, spawn=True)
    assert {r.command: r.exit_code for r in results}["info"] in (0, 3)
    assert all(not r.hang and r.rss_kib > 0 for r in results)
    before = run._stats(case.folder)
    (case.folder / case.top).write_bytes(b"x")
    assert run._stats(case.folder) != before


def test_fast_slice_has_no_internal_error_hang_or_modified_input(seeds, tmp_path: Path) -> None:
    findings = []
    records = []
    for i in range(SLICE_CASES):
        case, results = run.run_case(SLICE_SEED, i, seeds, tmp_path, timeout=30)
        records.append({"results": [r.__dict__ for r in results]})
        findings += [f"case {i} {r.command} exit {r.exit_code} hang={r.hang} "
                     f"modified={r.modified} {case.source} {case.mutations}: {r.stderr[-300:]}"
                     for r in results if run.bad(r)]
    summary = run.summarize(records)
    assert summary["commands"]["convert"]["runs"] == SLICE_CASES
    assert not findings, "\n".join(findings)
