"""Shared fixtures: the real images (decompressed once per machine into a cache)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import realimages


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests parametrized over a slow real image are slow too.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        for value in callspec.params.values():
            if isinstance(value, realimages.RealImage) and value.slow:
                item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not realimages.FIXTURES.is_dir():
        pytest.fail(f"real fixtures not found at {realimages.FIXTURES}")
    return realimages.FIXTURES


@pytest.fixture
def real_image(fixtures_dir: Path):
    """``real_image(name) -> Path`` of a read-only decompressed real image."""
    return realimages.materialize


@pytest.fixture
def scratch(tmp_path: Path):
    """``scratch(name, as_name=None) -> Path``: a writable copy of a real image in tmp_path."""
    def make(name: str, as_name: str | None = None) -> Path:
        return realimages.scratch_copy(name, tmp_path, as_name)
    return make


def require_tool(name: str) -> str:
    """Path of an external tool; in CI a missing tool fails, locally it skips."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI but not installed")
        pytest.skip(f"{name} not installed")
    return path
