"""The status poll's fast lane (api/jobs/fastpath.py) answers exactly as the Flask route,
and leaves every other request to Flask."""

from __future__ import annotations

import pytest

import api.jobs.routes as routes
from api import create_app
from service.config import TokenEntry, hash_token, load
from service.job import Job, new_job
from tests.api.conftest import TOKENS, auth

WRITE_ONLY = "write-only-token-0123456789"


@pytest.fixture
def job(store) -> Job:  # type: ignore[no-untyped-def]
    job, _ = store.create(new_job("merge", "h1", "vms", "vm1/a.avhdx", external_ref="T-1",
                                  callback={"url": "http://127.0.0.1/h", "secret": "s" * 16}))
    store.transition(job.id, None, "running", set_fields={
        "progress": {"done": 1, "total": 4, "percent": 25.0}, "phase": "copy"})
    return store.get(job.id)


def test_a_poll_skips_flask_and_answers_as_the_route_does(client, job, monkeypatch):  # type: ignore[no-untyped-def]
    # The route's answer (a query string sends the request to Flask)
    via_flask = client.get(f"/v1/jobs/{job.id}?via=flask", headers=auth("reader"))
    assert via_flask.status_code == 200
    # When the Flask route would fail, the poll still answers: Flask is not asked
    def broken(job_id: str) -> None:
        raise AssertionError("Flask's route was called")
    monkeypatch.setitem(client.application.view_functions, "jobs.get_job", broken)
    fast = client.get(f"/v1/jobs/{job.id}", headers=auth("reader"))
    assert fast.status_code == 200
    assert fast.get_data() == via_flask.get_data()
    assert dict(fast.headers) == dict(via_flask.headers)
    assert fast.json == routes.JobSchema().dump(job.to_public())
    assert fast.json["state"] == "running" and fast.json["callback"] == {
        "url": "http://127.0.0.1/h"} and "secret" not in fast.get_data(as_text=True)
    assert client.get(f"/v1/jobs/{job.id}", headers=auth("admin")).status_code == 200


@pytest.mark.parametrize("case", ["no token", "unknown token", "not bearer", "no scope",
                                  "unknown id", "lowercase id", "not an id", "trailing slash",
                                  "HEAD"])
def test_everything_else_is_flasks(case, store, job):  # type: ignore[no-untyped-def]
    settings = load({}, tokens=(*(TokenEntry(n, hash_token(t), frozenset(s))
                                  for n, (t, s) in TOKENS.items()),
                                TokenEntry("w", hash_token(WRITE_ONLY),
                                           frozenset({"jobs:write"}))))
    app = create_app(settings, store=store, dispatch=lambda *a: None)
    client = app.test_client()
    url, headers, method = f"/v1/jobs/{job.id}", auth("reader"), "GET"
    if case == "no token":
        headers = {}
    elif case == "unknown token":
        headers = {"Authorization": "Bearer not-a-known-token-0000"}
    elif case == "not bearer":
        headers = {"Authorization": f"Basic {TOKENS['reader'][0]}"}
    elif case == "no scope":
        headers = {"Authorization": f"Bearer {WRITE_ONLY}"}
    elif case == "unknown id":
        url = "/v1/jobs/01J00000000000000000000000"
    elif case == "lowercase id":
        url = f"/v1/jobs/{job.id.lower()}"
    elif case == "not an id":
        url = "/v1/jobs/nope"
    elif case == "trailing slash":
        url += "/"
    elif case == "HEAD":
        method = "HEAD"
    calls: list[str] = []
    real = app.view_functions["jobs.get_job"]

    def counted(job_id: str):  # type: ignore[no-untyped-def]
        calls.append(job_id)
        return real(job_id)
    app.view_functions["jobs.get_job"] = counted
    resp = client.open(url, method=method, headers=headers)
    expected = {"no token": 401, "unknown token": 401, "not bearer": 401, "no scope": 403,
                "unknown id": 404, "lowercase id": 404, "not an id": 404,
                "trailing slash": 404}
    if case in expected:
        assert resp.status_code == expected[case], resp.get_data(as_text=True)
        assert resp.content_type == "application/problem+json"
    else:  # Flask answers HEAD as a GET without a body
        assert resp.status_code == 200
    assert case == "trailing slash" or calls, "the request did not reach Flask"
