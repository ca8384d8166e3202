"""With vhdlib's real engine: inspect, plan and remediate a bloated demo chain over HTTP."""

from __future__ import annotations

import hashlib

import pytest

from tests.workers.conftest import http
from tests.workers.test_lifecycle import wait_state

demo = pytest.importorskip("vhdlib.demo")
ops = pytest.importorskip("vhdlib.ops")


def disk_sha(path) -> str:
    import vhdlib
    h = hashlib.sha256()
    with vhdlib.open(str(path)) as disk:
        for off in range(0, disk.virtual_size, 1 << 20):
            h.update(disk.read(off, min(1 << 20, disk.virtual_size - off)))
    return h.hexdigest()


def test_inspect_plan_and_remediate_a_real_chain(stack):
    chain = demo.make_bloated_chain(stack.root / "vm1", size=16 << 20)
    newest = chain[-1].relative_to(stack.root).as_posix()
    expected = disk_sha(chain[-1])
    stack.worker(VHDMEND_CHUNK_BYTES=str(1 << 20), VHDMEND_MAX_RATE="0")
    stack.api()
    stack.ready()
    # inspect runs on the worker (the API never opens a disk)
    status, job, _ = http("POST", f"{stack.url}/v1/jobs", {
        "type": "inspect", "host": "h1", "root": "vms", "path": newest})
    assert status == 202
    info = wait_state(stack, job["id"], "succeeded")["result"]
    assert len(info["chain"]) == len(chain)
    # plan answers synchronously with the exact space needed
    status, plan, _ = http("POST", f"{stack.url}/v1/plan", {
        "host": "h1", "root": "vms", "path": newest, "operation": "remediate",
        "options": {"output": "vm1/flat.vhd", "type": "fixed"}})
    assert status == 200, plan
    assert plan["plan"]["space"] and plan["plan"]["steps"]
    # remediate writes a fixed disk with the chain's exact content
    status, job, _ = http("POST", f"{stack.url}/v1/jobs", {
        "type": "remediate", "host": "h1", "root": "vms", "path": newest,
        "options": {"output": "vm1/flat.vhd", "type": "fixed"}, "external_ref": "CHG-1"})
    assert status == 202
    done = wait_state(stack, job["id"], "succeeded", timeout=120)
    assert done["plan"]["operation"] == "remediate"
    assert disk_sha(stack.root / "vm1" / "flat.vhd") == expected
    assert not list((stack.root / "vm1").glob("*.vhdmend.json"))
