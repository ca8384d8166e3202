"""vhdlib.attributes: owner, mode, ACL and xattrs carried from one file to another."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests import fsmounts
from tests.conftest import require_tool
from vhdlib import attributes
from vhdlib.errors import AttributeCarryError

BLOB = bytes(range(256)) * 3


@pytest.fixture
def folder():
    with fsmounts.tmpfs() as d:
        yield d


def _pair(folder: Path) -> tuple[Path, Path]:
    src, dest = folder / "src", folder / "dest"
    src.write_bytes(b"a")
    dest.write_bytes(b"b")
    os.chown(src, 3000, 3001)
    os.chmod(src, 0o640)
    os.setxattr(src, "security.NTACL", BLOB)
    os.setxattr(src, "user.DOSATTRIB", b"0x20\0")
    return src, dest


def test_capture_reads_every_carried_namespace(folder: Path) -> None:
    src, _ = _pair(folder)
    got = attributes.capture(str(src))
    assert (got.uid, got.gid, got.mode) == (3000, 3001, 0o640)
    assert got.xattrs == {"security.NTACL": BLOB, "user.DOSATTRIB": b"0x20\0"}


def test_carry_sets_everything_and_is_idempotent(folder: Path) -> None:
    src, dest = _pair(folder)
    require_tool("setfacl")
    subprocess.run(["setfacl", "-m", "u:3005:rw", str(src)], check=True)
    for _ in range(2):
        assert attributes.carry(str(src), str(dest)) == []
        assert attributes.capture(str(dest)) == attributes.capture(str(src))
    assert dest.read_bytes() == b"b"


def test_extra_attributes_of_the_new_file_are_removed(folder: Path) -> None:
    # A folder's default ACL gives every new file an access ACL the original lacks.
    require_tool("setfacl")
    sub = folder / "sub"
    sub.mkdir()
    subprocess.run(["setfacl", "-d", "-m", "u:3009:rwx", str(sub)], check=True)
    src, _ = _pair(folder)
    dest = sub / "new"
    dest.write_bytes(b"b")
    os.setxattr(dest, "user.stale", b"1")
    assert attributes.ACL in os.listxattr(dest)
    attributes.carry(str(src), str(dest))
    assert sorted(os.listxattr(dest)) == ["security.NTACL", "user.DOSATTRIB"]
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o640


def test_a_failed_attribute_refuses_or_is_dropped(folder: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = _pair(folder)
    real = os.setxattr

    def setxattr(path: str, name: str, value: bytes, *a: int) -> None:
        if name == "user.DOSATTRIB":
            raise OSError(95, "Operation not supported")
        real(path, name, value, *a)
    monkeypatch.setattr(os, "setxattr", setxattr)
    with pytest.raises(AttributeCarryError) as ei:
        attributes.carry(str(src), str(dest))
    assert ei.value.attributes == ["user.DOSATTRIB"] and ei.value.exit_code == 5
    assert "user.DOSATTRIB (Operation not supported)" in str(ei.value)
    assert attributes.carry(str(src), str(dest), drop=True) == ["user.DOSATTRIB"]
    assert os.getxattr(dest, "security.NTACL") == BLOB
