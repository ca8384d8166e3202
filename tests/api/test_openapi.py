"""OpenAPI 3.1 document, and schemathesis against it: no server errors anywhere."""

from __future__ import annotations

import pytest

from tests.api.conftest import auth


def test_openapi_document_describes_every_route(client, app):
    doc = client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/events", "/v1/hosts", "/v1/plan", "/healthz", "/metrics"):
        assert path in doc["paths"], path
    post = doc["paths"]["/v1/jobs"]["post"]
    assert "202" in post["responses"] and post["security"] == [{"bearer": []}]
    assert "JobCreate" in doc["components"]["schemas"]


schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture
def fuzz_app():
    import fakeredis

    from api import create_app
    from service.config import TokenEntry, hash_token, load
    from service.store import RedisJobStore as JobStore
    from tests.api.conftest import TOKENS
    settings = load({}, tokens=tuple(TokenEntry(n, hash_token(t), frozenset(s))
                                     for n, (t, s) in TOKENS.items()), plan_timeout=0.05)
    return create_app(settings, store=JobStore(fakeredis.FakeRedis(), prefix="fz"),
                      dispatch=lambda job_id, host: None)


def documented_unavailable(case, resp) -> bool:
    """/v1/plan's documented 503 (no live worker of the fuzzed host: issue 8 D10)."""
    return (case.operation.label == "POST /v1/plan" and resp.status_code == 503
            and "retry-after" in resp.headers
            and resp.json()["type"].endswith("/problems/no_live_worker"))


def test_schemathesis_finds_no_server_errors(fuzz_app):
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    failures = []
    calls = []
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            resp = case.call(headers=auth("admin"))
            calls.append(resp.status_code)
            if documented_unavailable(case, resp):
                return
            if resp.status_code >= 500:
                failures.append((case.operation.label, resp.status_code, resp.text[:300]))
            case.validate_response(resp, checks=[not_a_server_error])
        check()
    assert not failures
    assert len(calls) > 100 and any(c < 300 for c in calls) and any(c == 422 for c in calls)


def test_docs_work_offline_from_the_packaged_swagger_ui(client):
    page = client.get("/docs").get_data(as_text=True)
    assert "https://" not in page and "//unpkg" not in page and "cdn" not in page.lower()
    import re
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page)
    assert len(assets) == 3
    for url in assets:
        with client.get(url) as resp:
            assert resp.status_code == 200 and len(resp.data) > 500, url
    with client.get("/docs/assets/swagger-ui-bundle.js") as resp:
        assert "SwaggerUIBundle" in resp.get_data(as_text=True)
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/docs/assets/..%2Fopenapi.py").status_code == 404


def test_error_health_and_stream_bodies_are_documented(client):
    doc = client.get("/openapi.json").json
    paths = doc["paths"]
    conflict = paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"]["409"]
    assert conflict["content"]["application/problem+json"]["schema"]["$ref"].endswith(
        "/Problem")
    for path in ("/healthz", "/readyz"):
        ok = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"]["$ref"].endswith("/Health")
    ready_503 = paths["/readyz"]["get"]["responses"]["503"]["content"]
    assert "application/problem+json" in ready_503
    stream = paths["/v1/jobs/{job_id}/stream"]["get"]["responses"]["200"]
    assert list(stream["content"]) == ["text/event-stream"]
    assert "Last-Event-ID" in stream["description"]
    # OpenAPI 3.1 reads a text/event-stream schema as one event's, its JSON in `data`
    event = stream["content"]["text/event-stream"]["schema"]
    assert set(event["properties"]) == {"event", "id", "retry", "data"}
    assert event["properties"]["data"]["contentMediaType"] == "application/json"
    assert event["properties"]["data"]["contentSchema"]["$ref"].endswith("/Job")
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status"}
    assert problem.get("additionalProperties") is False
