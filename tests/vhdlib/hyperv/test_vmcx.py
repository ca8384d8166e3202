"""The binary .vmcx of Hyper-V 2016+ is detected and refused with a typed reason."""

from __future__ import annotations

import pytest

from vhdlib.hyperv import vmcx
from vhdlib.hyperv.errors import ConfigError, UnsupportedConfigError


def test_vmcx_refused_as_unsupported(tmp_path):
    path = tmp_path / "6A0C6E2E-0F3C-4C1E-9D4B-1234567890AB.VMCX"
    path.write_bytes(b"\x00" * 4096)
    assert vmcx.is_vmcx(str(path))
    with pytest.raises(UnsupportedConfigError) as info:
        vmcx.read(str(path))
    assert info.value.code == "unsupported_vm_config" and info.value.exit_code == 3
    assert "Get-VMHardDiskDrive" in str(info.value) and str(path) in str(info.value)


def test_not_a_vmcx(tmp_path):
    (tmp_path / "a.xml").write_text("<configuration/>")
    assert not vmcx.is_vmcx(str(tmp_path / "a.xml"))
    with pytest.raises(ConfigError):
        vmcx.read(str(tmp_path / "a.xml"))
    with pytest.raises(ConfigError, match="regular file"):
        vmcx.read(str(tmp_path / "missing.vmcx"))
