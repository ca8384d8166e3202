"""Real filesystems with xattrs and ACLs for tests (as root): tmpfs and an ext4 loop mount."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def fs_type(path: Path) -> str:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


@contextlib.contextmanager
def tmpfs() -> Iterator[Path]:
    """A folder on tmpfs (/dev/shm, or a fresh tmpfs mount)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and fs_type(shm) == "tmpfs":
        with tempfile.TemporaryDirectory(dir=shm, prefix="vhdmend-") as d:
            yield Path(d)
        return
    with _mounted(["-t", "tmpfs", "-o", "size=256m", "tmpfs"]) as d:
        yield d


@contextlib.contextmanager
def ext4(scratch: Path, size: int = 128 << 20) -> Iterator[Path]:
    """A file-backed ext4 loop mount under ``scratch`` (where loop devices are missing:
    ``scratch`` itself, if it is on ext2/3/4)."""
    if not _loop_possible():
        if fs_type(scratch) == "ext2/ext3":
            folder = scratch / "ext4"
            folder.mkdir()
            yield folder
            return
        _unavailable("no loop device, and the scratch folder is not on ext4")
    image = scratch / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(size)
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    r = subprocess.run([mkfs, "-q", "-F", str(image)], capture_output=True, text=True)
    if r.returncode != 0:
        _unavailable(f"mkfs.ext4 failed: {r.stderr.strip()}")
    with _mounted(["-o", "loop", str(image)]) as d:
        yield d


def _loop_possible() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/loop-control")


@contextlib.contextmanager
def ntfs3g(scratch: Path, size: int = 64 << 20) -> Iterator[Path]:
    """An NTFS image mounted with ntfs-3g (FUSE): no POSIX owner or mode per file (chown
    and chmod succeed silently and change nothing)."""
    mkfs = shutil.which("mkfs.ntfs") or "/sbin/mkfs.ntfs"
    image = scratch / "ntfs.img"
    with open(image, "wb") as f:
        f.truncate(size)
    r = subprocess.run([mkfs, "-q", "-F", "-f", str(image)], capture_output=True, text=True)
    if r.returncode != 0 or not shutil.which("ntfs-3g"):
        _unavailable(f"mkfs.ntfs/ntfs-3g unavailable: {r.stderr.strip()}")
    with _mounted(["-t", "ntfs-3g", str(image)]) as d:
        yield d


@contextlib.contextmanager
def _mounted(args: list[str]) -> Iterator[Path]:
    if os.geteuid() != 0:
        _unavailable("mounting needs root")
    target = Path(tempfile.mkdtemp(prefix="vhdmend-mnt-"))
    r = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        target.rmdir()
        _unavailable(f"mount {' '.join(args)} failed: {r.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)
        target.rmdir()


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs this filesystem: {why}")
    pytest.skip(why)
