"""``/v1/volumes`` and ``/v1/chains`` over statuses a real scan of real (tmpfs) volumes
stored: filters, stable ids, root-relative names only, plan steps that POST as jobs."""

from __future__ import annotations

from pathlib import Path

from service import config
from service.volumes import monitor
from tests import tmpfs
from tests.api.conftest import auth
from tests.chains import create
from vhdlib.layer import DiskType

MiB = 1 << 20
volume = tmpfs.volume


def observe(store, host: str, root: Path, t: float) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    s = config.load({}, host=host, roots={"vms": str(root)}, reserve=16 * MiB)
    return monitor.observe(s, store.volumes, now=t)


def test_volumes_and_chains(client, store, volume) -> None:  # type: ignore[no-untyped-def]
    a: Path = volume("a", 128)
    b: Path = volume("b", 64)
    create("vhd", a / "dyn.vhd", 112 * MiB, DiskType.DYNAMIC).close()
    (b / "vm").mkdir()
    create("vhd", b / "vm" / "fixed.vhd", 8 * MiB, DiskType.FIXED).close()
    (va,) = observe(store, "h1", a, 1_800_000_000.0)
    observe(store, "h2", b, 1_800_000_000.0)
    (again,) = observe(store, "h1", a, 1_800_000_300.0)
    assert again["id"] == va["id"]  # stable across scans

    r = client.get("/v1/volumes", headers=auth("reader"))
    assert r.status_code == 200
    items = r.json["items"]
    assert [(v["host"], v["risk"]) for v in items] == [("h1", "warning"), ("h2", "ok")]
    assert items[0]["chain_count"] == 1 and "chains" not in items[0]
    assert [v["host"] for v in client.get("/v1/volumes?risk=ok",
                                          headers=auth("reader")).json["items"]] == ["h2"]
    assert [v["risk"] for v in client.get("/v1/volumes?host=h1",
                                          headers=auth("reader")).json["items"]] == ["warning"]
    assert client.get("/v1/volumes?risk=bad", headers=auth("reader")).status_code == 422
    assert client.get("/v1/volumes").status_code == 401

    one = client.get(f"/v1/volumes/{va['id']}", headers=auth("reader"))
    assert one.status_code == 200
    v = one.json
    assert v["free_bytes"] == tmpfs.free_bytes(a) and v["roots"] == ["vms"]
    assert [h["at"] for h in v["history"]] == ["2027-01-15T08:00:00Z", "2027-01-15T08:05:00Z"]
    (chain,) = v["chains"]
    assert chain["leaf"] == "dyn.vhd" and chain["root"] == "vms"
    assert chain["layers"] == [{"root": "vms", "path": "dyn.vhd"}]
    assert chain["volume"] == va["id"] and chain["growth_bytes"] > 100 * MiB
    step = v["plan"]["steps"][0]
    assert step["job"]["path"] == "dyn.vhd" and step["needs_bytes"] > 0
    assert str(a) not in one.get_data(as_text=True)
    # The step is a job body as it stands.
    posted = client.post("/v1/jobs", json=step["job"], headers=auth("writer"))
    assert posted.status_code == 202, posted.json
    assert posted.json["type"] == "remediate" and posted.json["path"] == "dyn.vhd"

    assert client.get("/v1/volumes/nope", headers=auth("reader")).status_code == 404
    chains = client.get("/v1/chains?risk=warning", headers=auth("reader")).json["items"]
    assert [(c["host"], c["leaf"]) for c in chains] == [("h1", "dyn.vhd")]
    ok = client.get("/v1/chains?risk=ok", headers=auth("reader")).json["items"]
    assert [(c["host"], c["leaf"]) for c in ok] == [("h2", "vm/fixed.vhd")]


def test_documented(client) -> None:  # type: ignore[no-untyped-def]
    doc = client.get("/openapi.json").json
    for path in ("/v1/volumes", "/v1/volumes/{volume_id}", "/v1/chains"):
        assert path in doc["paths"], path
    assert "Volume" in doc["components"]["schemas"]
    params = {p["name"] for p in doc["paths"]["/v1/volumes"]["get"]["parameters"]}
    assert {"host", "risk"} <= params
