"""Root-relative names: no absolute host path gets out."""

from __future__ import annotations

import os

from service.volumes.naming import Namer, chain_id, volume_id


def test_locate_and_text(tmp_path) -> None:
    a = tmp_path / "a"
    inner = a / "inner"
    inner.mkdir(parents=True)
    namer = Namer({"outer": str(a), "in": str(inner)})
    assert namer.locate(str(a / "x.vhd")) == ("outer", "x.vhd")
    assert namer.locate(str(inner / "d" / "y.vhdx")) == ("in", os.path.join("d", "y.vhdx"))
    assert namer.locate(str(a)) == ("outer", ".")
    assert namer.locate(str(tmp_path / "ab" / "z.vhd")) is None
    assert namer.file("/etc/passwd") is None
    msg = f"parent {a}/base.vhd not found (tried /srv/other/base.vhd; search in {inner}/d)"
    out = namer.text(msg)
    assert out == ("parent outer:base.vhd not found (tried <outside the roots>; "
                   "search in in:d)")
    assert str(tmp_path) not in out
    assert namer.text(f"free on {a}: 2 MiB") == "free on outer:.: 2 MiB"


def test_ids_are_stable_and_distinct() -> None:
    assert volume_id("h1", "/mnt/a") == volume_id("h1", "/mnt/a")
    assert len({volume_id("h1", "/mnt/a"), volume_id("h2", "/mnt/a"),
                volume_id("h1", "/mnt/b"), chain_id("h1", "/mnt/a")}) == 4
    assert len(volume_id("h", "/")) == 16
