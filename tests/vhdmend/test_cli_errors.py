"""Exit codes and messages for bad input: typed errors, one line, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vhdmend.helpers import assert_clean_error, run_cli


def test_directory_is_exit_3(tmp_path: Path) -> None:
    r = run_cli("info", tmp_path)
    assert_clean_error(r, 3)
    assert "directory" in r.err


def test_missing_file_is_exit_3(tmp_path: Path) -> None:
    r = run_cli("info", tmp_path / "nope.vhd")
    assert_clean_error(r, 3)
    assert "no such file" in r.err


def test_device_is_exit_3() -> None:
    r = run_cli("map", os.devnull)
    assert_clean_error(r, 3)


@pytest.mark.parametrize("content", [b"", b"hello world\n", bytes(4096), b"conectix" + bytes(8)])
def test_not_an_image_is_exit_3(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.vhd"
    path.write_bytes(content)
    before = path.read_bytes()
    r = run_cli("info", path)
    assert_clean_error(r, 3)
    assert path.read_bytes() == before  # never a write


def test_json_error_object(tmp_path: Path) -> None:
    r = run_cli("info", tmp_path, "--json")
    assert_clean_error(r, 3)
    err = r.json()["error"]
    assert err["type"] == "not_a_disk"
    assert err["exit_code"] == 3
    assert str(tmp_path) in err["detail"]


@pytest.mark.parametrize("size", ["10Q", "0", "-5", "lots"])
def test_bad_size_is_exit_2(tmp_path: Path, size: str) -> None:
    r = run_cli("create", tmp_path / "x.vhd", "--type", "dynamic", "--size", size)
    assert r.code == 2, r
    assert "size" in r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "x.vhd").exists()


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["info"],
    ["create", "x.vhd"],                                  # --type is required
    ["create", "x.vhd", "--type", "dynamic"],             # --size is required
    ["create", "x.vhd", "--type", "differencing"],        # --parent is required
    ["create", "x.vhd", "--type", "fixed", "--size", "1M", "--parent", "p.vhd"],
    ["merge", "a.avhd", "--archive", "d", "--delete"],     # exclusive
    ["convert", "a.vhd", "b.vhd", "--type", "sparse"],
])
def test_usage_errors_are_exit_2(tmp_path: Path, argv: list[str]) -> None:
    r = run_cli(*argv, cwd=tmp_path)
    assert r.code == 2, r
    assert "Traceback" not in r.err
    assert list(tmp_path.iterdir()) == []


def test_create_refuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.vhd"
    path.write_bytes(b"precious")
    r = run_cli("create", path, "--type", "dynamic", "--size", "1M")
    assert_clean_error(r, 2)
    assert path.read_bytes() == b"precious"


def test_help_and_version() -> None:
    r = run_cli("--help")
    assert r.code == 0
    for name in ("info", "map", "check", "create", "merge", "compact", "convert",
                 "remediate", "resume", "demo"):
        assert name in r.out
    r = run_cli("--version")
    assert r.code == 0 and r.out.startswith("vhdmend ")
