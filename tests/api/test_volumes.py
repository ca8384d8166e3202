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


def test_chains_name_their_vm_and_checkpoints(client, store, volume, tmp_path,  # type: ignore[no-untyped-def]
                                              monkeypatch) -> None:
    """A 2012 R2-style VM folder (XML configuration + checkpoint XMLs) on a real volume's
    root: each chain's VM and checkpoints pass through, every file root-relative."""
    from tests.vhdlib.hyperv.scenario import CHECKPOINT_IDS, VM_ID, VM_NAME, make_vm_share
    from tests.vhdlib.hyperv.test_remediate_next_steps import fake_testparm
    vol: Path = volume("hv", 160)
    vm = make_vm_share(vol, controller="SCSI", number=0, location=1)
    create("vhd", vm.share / "loose.vhd", 4 * MiB, DiskType.FIXED).close()  # no VM's
    monkeypatch.setenv("PATH", fake_testparm(tmp_path / "bin", vm))
    s = config.load({}, host="h1", roots={"vms": str(vm.share)}, reserve=16 * MiB)
    monitor.observe(s, store.volumes, now=1_800_000_000.0)

    r = client.get("/v1/chains", headers=auth("reader"))
    assert r.status_code == 200
    body = r.get_data(as_text=True)
    assert str(vol) not in body and str(tmp_path) not in body
    chains = {c["leaf"]: c for c in r.json["items"]}
    rel = "Web 01/Virtual Hard Disks/"
    chain = chains[rel + vm.chain.newest.name]
    owner = chain["vm"]
    assert (owner["vm_name"], owner["vm_id"]) == (VM_NAME, VM_ID)
    assert (owner["controller_type"], owner["controller_number"],
            owner["controller_location"]) == ("SCSI", 0, 1)
    assert owner["file"] == {"root": "vms", "path": rel + vm.chain.newest.name}
    assert owner["config"] == {"root": "vms",
                               "path": str(vm.config.relative_to(vm.share))}
    assert owner["windows_path"].upper().endswith(vm.chain.newest.name.upper())
    assert owner["mapping"] == "share" and "checkpoints" not in owner
    assert sorted(c["id"] for c in chain["checkpoints"]) == sorted(CHECKPOINT_IDS)
    layers = {f"{rel}{p.name}" for p in vm.chain.paths}
    for c in chain["checkpoints"]:
        assert c["file"]["root"] == "vms" and c["file"]["path"] in layers
        assert c["config"]["path"].startswith("Web 01/Snapshots/")
    # A chain no configuration names has no VM and no checkpoints.
    assert chains["loose.vhd"]["vm"] is None and chains["loose.vhd"]["checkpoints"] == []
    # The volume's own view carries the same, and the OpenAPI document describes it.
    one = client.get(f"/v1/volumes/{chain['volume']}", headers=auth("reader")).json
    assert next(c for c in one["chains"] if c["id"] == chain["id"])["vm"] == owner
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    assert {"vm", "checkpoints"} <= set(schemas["Chain"]["properties"])
    assert {"controller_type", "file", "config"} <= set(schemas["Vm"]["properties"])
