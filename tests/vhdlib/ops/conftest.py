"""Every ops test runs across both formats where the format exists."""

from __future__ import annotations

import importlib.util

import pytest

FORMATS = ["vhd", "vhdx"]


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    name = request.param
    if name == "vhdx":
        try:
            from vhdlib import vhdx
            if not hasattr(vhdx, "create"):
                raise ImportError
        except ImportError:
            if importlib.util.find_spec("vhdlib.vhdx") is None:
                pytest.fail("vhdlib.vhdx missing")
            pytest.skip("vhdx create not available yet")
    return str(name)
