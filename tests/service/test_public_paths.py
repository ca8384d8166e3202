"""Absolute storage-host paths never leave the worker (issue 8 D2)."""

from __future__ import annotations

from service.public_paths import OUTSIDE, Relativizer


def test_paths_become_relative_to_their_root(tmp_path):
    vms, other = tmp_path / "vms", tmp_path / "other"
    vms.mkdir()
    other.mkdir()
    rel = Relativizer({"vms": str(vms), "b": str(other)}, "vms")
    plan = {"inputs": [f"{vms}/vm1/a.avhd", f"{vms}/vm1/base.vhd"], "base": f"{vms}/vm1/base.vhd",
            "volume": str(tmp_path.parent), "device": "/dev/sda1",
            "archive": f"{other}/old", f"{vms}/x": 1, "size": 5, "nested": [{"p": str(vms)}]}
    got = rel(plan)
    assert got["inputs"] == ["vm1/a.avhd", "vm1/base.vhd"] and got["base"] == "vm1/base.vhd"
    assert got["volume"] == "vms:(volume)" and got["device"] == OUTSIDE
    assert got["archive"] == "b:old" and got["x"] == 1 and got["size"] == 5
    assert got["nested"] == [{"p": "."}]
    detail = rel(f"cannot read {vms}/vm1/a.avhd: parent '/etc/passwd' refused (see {other})")
    assert detail == f"cannot read vm1/a.avhd: parent '{OUTSIDE}' refused (see b:.)"
    assert str(tmp_path) not in str(got) + detail
