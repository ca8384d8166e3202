"""``--lenient`` on an operation warns about what it accepted, as ``info`` does (issue 9,
item 11; the README promises the warning)."""

from __future__ import annotations

from pathlib import Path

from tests.vhdmend.helpers import run_cli


def test_convert_lenient_warns_about_the_bad_checksum(real_image, tmp_path: Path) -> None:
    src = real_image("dfvfs/image.vhd")  # hand-edited footer checksum
    r = run_cli("convert", src, tmp_path / "out.raw", "--format", "raw", "--lenient")
    assert r.code == 0, r.err
    assert "warning:" in r.err and "checksum" in r.err and str(src) in r.err
    info = run_cli("info", src, "--lenient")
    assert "warning:" in info.err


def test_remediate_output_lenient_warns(real_image, tmp_path: Path) -> None:
    child = real_image("dfvfs/image-differential.vhd")
    r = run_cli("remediate", child, "--output", tmp_path / "out.vhd", "--lenient", "-q")
    assert r.code == 0, r.err
    assert r.err.count("warning:") >= 2  # the child's and the parent's checksums


def test_convert_without_lenient_has_no_warning(real_image, tmp_path: Path) -> None:
    r = run_cli("convert", real_image("dissect.hypervisor/dynamic.vhd"),
                tmp_path / "out.raw", "--format", "raw", "-q")
    assert r.code == 0, r.err
    assert "warning" not in r.err
