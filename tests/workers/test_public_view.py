"""What a real worker stores shows no storage-host path, machine name or PID (issue 8 D2,
D3): the plan, the result, an error, the events and every webhook."""

from __future__ import annotations

import json
import socket

from tests.workers.conftest import http, make_chain, wait_for
from tests.workers.test_lifecycle import events, get, submit, wait_state


def _no_internals(stack, text: str) -> None:
    for secret in (str(stack.root), str(stack.root.resolve()), str(stack.tmp),
                   f"@{socket.gethostname()}", f'"{socket.gethostname()}:'):
        assert secret not in text, (secret, text[:2000])


def test_plan_result_error_events_and_webhooks_are_relative(stack, httpserver):
    received: list[str] = []

    def hook(request):
        from werkzeug.wrappers import Response
        received.append(request.get_data(as_text=True))
        return Response("ok")
    httpserver.expect_request("/hook").respond_with_handler(hook)
    chain = make_chain(stack.root / "vm1")
    stack.worker()
    stack.api()
    stack.ready("h1")
    cb = {"url": httpserver.url_for("/hook"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    job_id = submit(stack, {"type": "remediate", "path": f"vm1/{chain[-1].name}",
                            "options": {"output": "vm1/flat.vhd"}, "callback": cb})
    job = wait_state(stack, job_id, {"succeeded", "failed"}, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["plan"] and job["result"]
    assert "vm1/flat.vhd" in json.dumps(job["result"])
    plan_status, plan, _ = http("POST", f"{stack.url}/v1/plan", {
        "host": "h1", "root": "vms", "path": f"vm1/{chain[-1].name}",
        "operation": "merge"})
    assert plan_status == 200, plan
    inspect = submit(stack, {"type": "inspect", "path": f"vm1/{chain[-1].name}"})
    inspected = wait_state(stack, inspect, "succeeded")
    bad = submit(stack, {"type": "inspect", "path": "vm1/missing.vhd"})
    failed = wait_state(stack, bad, "failed")
    assert failed["error"]["title"] and "Error" not in failed["error"]["title"]
    wait_for(lambda: any('"job.succeeded"' in r for r in received), 30, what="webhook")
    _, hosts, _ = http("GET", f"{stack.url}/v1/hosts")
    for doc in (job, plan, inspected, failed, events(stack, job_id), hosts, received,
                get(stack, job_id)):
        _no_internals(stack, json.dumps(doc))
    assert job["worker"].startswith("w_")
    assert job["worker"] in {w["worker"] for h in hosts["items"] for w in h["workers"]}
