"""Real small volumes for the space tests: tmpfs mounts (root only; CI runs as root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MiB = 1 << 20


def mount(path: Path, size_mib: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                          str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {res.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """``volume(name, size_mib) -> Path``: a fresh tmpfs of that size, unmounted after."""
    mounted: list[Path] = []

    def make(name: str, size_mib: int) -> Path:
        path = tmp_path / name
        mount(path, size_mib)
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> None:
    """Write ``path`` so that about ``leave`` bytes stay free on its volume."""
    remaining = max(0, free_bytes(path.parent) - leave)
    with open(path, "wb") as f:
        while remaining > 0:
            n = min(MiB, remaining)
            f.write(b"\1" * n)
            remaining -= n
