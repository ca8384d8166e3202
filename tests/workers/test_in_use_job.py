"""The service refuses a chain another process holds open with the library's typed error
(``in_use``), changing nothing; released, the same job succeeds (issue 8 item 1)."""

from __future__ import annotations

from tests.vhdlib.inuse.holders import holding
from tests.vhdmend.helpers import file_tree
from tests.workers.conftest import http, make_chain
from tests.workers.test_lifecycle import wait_state


def test_job_on_a_held_chain_fails_in_use_then_succeeds(stack):
    chain = make_chain(stack.root / "vm1", size=8 << 20)
    newest = chain[-1].relative_to(stack.root).as_posix()
    stack.worker(VHDMEND_MAX_RATE="0")
    stack.api()
    stack.ready()
    before = file_tree(stack.root / "vm1")
    job = {"type": "merge", "host": "h1", "root": "vms", "path": newest,
           "options": {"delete": True}}
    with holding(chain[0], "rb"):
        status, sub, _ = http("POST", f"{stack.url}/v1/jobs", job)
        assert status == 202, sub
        failed = wait_state(stack, sub["id"], "failed")
    assert failed["error"]["type"] == "in_use", failed["error"]
    assert "refusing to merge" in failed["error"]["detail"]
    assert file_tree(stack.root / "vm1") == before
    status, sub, _ = http("POST", f"{stack.url}/v1/jobs", job)
    assert status == 202, sub
    wait_state(stack, sub["id"], "succeeded", timeout=120)
    assert not chain[-1].exists()
