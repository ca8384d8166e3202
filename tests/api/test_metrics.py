"""``/metrics`` from prometheus_client: volume and chain families equal the API's values,
and label values are escaped (a path with quotes, backslashes, newlines parses back)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service import config
from service.volumes import monitor
from tests import tmpfs
from tests.api.conftest import auth
from tests.chains import create
from vhdlib.layer import DiskType

MiB = 1 << 20
volume = tmpfs.volume


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_volume_metrics_equal_the_api(client, store, volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("m", 128)
    odd = vol / 'we"ird\\dir'
    odd.mkdir()
    create("vhd", odd / "dyn\nline.vhd", 112 * MiB, DiskType.DYNAMIC).close()
    s = config.load({}, host="h1", roots={"vms": str(vol)}, reserve=16 * MiB)
    t0 = 1_800_000_000.0
    for i in range(4):  # falling: seconds_to_full present
        with open(vol / "hog", "ab") as f:
            f.write(b"\1" * MiB)
        monitor.observe(s, store.volumes, now=t0 + 300 * i)
    text = client.get("/metrics", headers=auth("reader")).get_data(as_text=True)
    got = samples(text)
    (v,) = client.get("/v1/volumes", headers=auth("reader")).json["items"]
    labels = (("host", "h1"), ("root", "vms"), ("volume", v["id"]))
    for name in ("free_bytes", "total_bytes", "growth_bytes", "reserve_bytes",
                 "seconds_to_full"):
        assert got[(f"vhdmend_volume_{name}", labels)] == v[name], name
    assert got[("vhdmend_volume_risk", labels)] == {"ok": 0, "warning": 1, "critical": 2}[
        v["risk"]]
    (c,) = client.get("/v1/chains", headers=auth("reader")).json["items"]
    assert c["leaf"] == 'we"ird\\dir/dyn\nline.vhd'
    chain_labels = (("host", "h1"), ("leaf", c["leaf"]), ("root", "vms"))
    assert got[("vhdmend_chain_growth_bytes", chain_labels)] == c["growth_bytes"]
    assert got[("vhdmend_chain_snapshots", chain_labels)] == 0
    assert ("vhdmend_scan_duration_seconds", (("host", "h1"),)) in got
    assert 'leaf="we\\"ird\\\\dir/dyn\\nline.vhd"' in text
    assert str(vol) not in text


def test_seconds_to_full_absent_when_not_falling(client, store, volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("n", 64)
    create("vhd", vol / "f.vhd", 8 * MiB, DiskType.FIXED).close()
    s = config.load({}, host="h1", roots={"vms": str(vol)}, reserve=16 * MiB)
    monitor.observe(s, store.volumes, now=1.0e9)
    monitor.observe(s, store.volumes, now=1.0e9 + 300)
    text = client.get("/metrics", headers=auth("reader")).get_data(as_text=True)
    assert "vhdmend_volume_free_bytes{" in text
    assert "vhdmend_volume_seconds_to_full{" not in text
    assert 'vhdmend_volume_risk{host="h1"' in text
