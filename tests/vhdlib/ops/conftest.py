"""Every ops test runs across both formats (the cstruct ``compiled`` fixture pattern)."""

from __future__ import annotations

import pytest

FORMATS = ["vhd", "vhdx"]


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)
