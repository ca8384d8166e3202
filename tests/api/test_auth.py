"""Bearer tokens with scopes; health needs none."""

from __future__ import annotations

import pytest

from tests.api.conftest import auth, job_body


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs"])
def test_public_endpoints_need_no_token(client, path):
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("method,path", [
    ("get", "/v1/jobs"), ("post", "/v1/jobs"), ("get", "/v1/hosts"), ("post", "/v1/plan"),
    ("get", "/metrics"), ("get", "/v1/jobs/01J0000000000000000000000A"),
    ("post", "/v1/jobs/01J0000000000000000000000A/cancel"),
])
def test_missing_token_is_401_problem(client, method, path):
    resp = getattr(client, method)(path)
    assert resp.status_code == 401
    assert resp.content_type == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer nope-nope-nope", "Basic dXNlcjpwYXNz", "Bearer ",
                                    "token"])
def test_bad_tokens_are_401(client, header):
    assert client.get("/v1/jobs", headers={"Authorization": header}).status_code == 401


def test_read_scope_cannot_write(client):
    resp = client.post("/v1/jobs", json=job_body(), headers=auth("reader"))
    assert resp.status_code == 403
    assert resp.json["type"].endswith("/forbidden")


def test_read_scope_reads_and_admin_does_everything(client):
    assert client.get("/v1/jobs", headers=auth("reader")).status_code == 200
    assert client.post("/v1/jobs", json=job_body(), headers=auth("admin")).status_code == 202


def test_tokens_are_stored_hashed_only(settings):
    from tests.api.conftest import TOKENS
    for entry in settings.tokens:
        assert all(entry.sha256 != plain for plain, _ in TOKENS.values())
        assert len(entry.sha256) == 64
