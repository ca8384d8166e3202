"""GET /v1/kinds: every job kind, read from the service's registry."""

from __future__ import annotations

from service import kinds
from service.kinds import JobKind
from tests.api.conftest import auth


def test_kinds_are_the_registry_in_its_order(client) -> None:
    r = client.get("/v1/kinds", headers=auth("reader"))
    assert r.status_code == 200
    items = r.json["items"]
    assert [k["name"] for k in items] == list(kinds.names())
    for item in items:
        kind = kinds.get(item["name"])
        assert item == {"name": kind.name, "summary": kind.summary, "mutating": kind.mutating,
                        "folder": kind.folder, "options": list(kind.options)}
    by_name = {k["name"]: k for k in items}
    assert by_name["merge"]["mutating"] is True and by_name["inspect"]["mutating"] is False
    assert by_name["scan"]["folder"] is True and "into" in by_name["merge"]["options"]


def test_a_kind_registered_later_is_listed(client, monkeypatch) -> None:
    # The answer is the registry's, not a list of the API's own.
    monkeypatch.setitem(kinds._REGISTRY, "du", JobKind(
        "du", "Disk usage of a folder", options=("depth",), run=lambda ctx: {}, folder=True))
    items = client.get("/v1/kinds", headers=auth("reader")).json["items"]
    assert items[-1] == {"name": "du", "summary": "Disk usage of a folder", "mutating": False,
                         "folder": True, "options": ["depth"]}


def test_kinds_need_a_token(client) -> None:
    r = client.get("/v1/kinds")
    assert r.status_code == 401 and r.mimetype == "application/problem+json"


def test_kinds_are_in_openapi_and_are_the_type_filter_values(client) -> None:
    doc = client.get("/openapi.json").json
    op = doc["paths"]["/v1/kinds"]["get"]
    assert op["security"] == [{"bearer": []}]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/KindList"}
    assert set(doc["components"]["schemas"]["Kind"]["properties"]) == {
        "name", "summary", "mutating", "folder", "options"}
    (param,) = [p for p in doc["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "type"]
    names = [k["name"] for k in client.get("/v1/kinds", headers=auth("reader")).json["items"]]
    assert param["schema"]["enum"] == names
