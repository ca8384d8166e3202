"""The API's per-type options schemas (and the OpenAPI document) are vhdlib's option
declarations."""

from __future__ import annotations

from vhdlib import ops


def test_api_schemas_are_the_declarations() -> None:
    from api.jobs.schemas import options_schema
    for kind, cls in ops.OPERATIONS.items():
        schema = options_schema(kind)()
        assert set(schema.fields) == {o.name for o in cls.options}, kind
        for opt in cls.options:
            assert schema.fields[opt.name].required == opt.required, (kind, opt.name)


def test_openapi_documents_each_types_options() -> None:
    import fakeredis

    from api import create_app
    from api.openapi import build_spec
    from service.config import load
    from service.store import RedisJobStore as JobStore
    app = create_app(load({}, tokens=()), store=JobStore(fakeredis.FakeRedis(), prefix="t"),
                     dispatch=lambda job_id, host: None)
    doc = build_spec(app)
    schemas = doc["components"]["schemas"]
    options = schemas["JobCreate"]["properties"]["options"]
    assert "additionalProperties" not in options and "type" not in options
    refs = {r["$ref"].rsplit("/", 1)[1] for r in options["anyOf"]}
    for kind, cls in ops.OPERATIONS.items():
        name = f"{kind.capitalize()}Options"
        assert name in refs and f"Plan{name}" in refs
        props = schemas[name]["properties"]
        assert set(props) == {o.name for o in cls.options}
        for opt in cls.options:
            if opt.type is str and opt.allowed:
                assert props[opt.name]["enum"] == list(opt.allowed)
    assert schemas["ConvertOptions"]["required"] == ["output"]
    assert schemas["PlanMergeOptions"]["properties"]["operation"]["enum"] == ["merge"]
