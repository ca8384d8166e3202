"""GET /v1/whoami: the token's name and scopes (what the dashboard may offer)."""

from __future__ import annotations

from tests.api.conftest import auth


def test_whoami_names_the_scopes(client) -> None:
    r = client.get("/v1/whoami", headers=auth("reader"))
    assert r.status_code == 200
    assert r.json == {"name": "reader", "scopes": ["jobs:read"], "can_write": False}
    r = client.get("/v1/whoami", headers=auth("writer"))
    assert r.json == {"name": "writer", "scopes": ["jobs:read", "jobs:write"], "can_write": True}
    assert client.get("/v1/whoami", headers=auth("admin")).json["can_write"] is True


def test_whoami_without_a_valid_token_is_401(client) -> None:
    r = client.get("/v1/whoami")
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    r = client.get("/v1/whoami", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401


def test_whoami_is_in_openapi(client) -> None:
    op = client.get("/openapi.json").json["paths"]["/v1/whoami"]["get"]
    assert op["security"] == [{"bearer": []}]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Whoami"}
