"""OpenAPI 3.1 built from the routes' declarations and their marshmallow schemas.

Each view declares itself with :func:`operation`; :func:`build_spec` walks the URL map.
``/openapi.json`` serves the document, ``/docs`` a page that renders it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory
from marshmallow import Schema

from api.problems import MEDIA_TYPE, ProblemSchema
from service.errors import NotFound

F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint("openapi", __name__)


def operation(summary: str, *, body: type[Schema] | None = None,
              query: type[Schema] | None = None,
              responses: dict[int, tuple[str, type[Schema] | None]] | None = None,
              tags: tuple[str, ...] = (), headers: dict[str, str] | None = None,
              media: str = "application/json",
              links: dict[int, tuple[str, ...]] | None = None) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a view function. ``links``: status -> operationIds that
    take the response's job ``id`` as ``job_id`` (OpenAPI links: stateful clients)."""
    def wrap(view: F) -> F:
        view._openapi = {"summary": summary, "body": body,  # type: ignore[attr-defined]
                         "query": query, "responses": responses or {}, "tags": tags,
                         "headers": headers or {}, "media": media, "links": links or {}}
        return view
    return wrap


SSE = "text/event-stream"


def sse_event(data: dict[str, Any]) -> dict[str, Any]:
    """The schema of one server-sent event: OpenAPI 3.1 reads a ``text/event-stream``
    schema as each event's (its fields as an SSE parser yields them), not as ``data``'s.
    ``data`` is a JSON document of the schema ``data`` (``contentSchema``)."""
    return {"type": "object", "required": ["data"], "additionalProperties": False,
            "properties": {
                "event": {"type": "string", "description": "the event's name"},
                "id": {"type": "string", "pattern": "^[0-9]{1,20}$",
                       "description": "an integer, increasing: send it as Last-Event-ID"},
                "retry": {"type": "integer", "minimum": 0,
                          "description": "milliseconds to wait before reconnecting"},
                "data": {"type": "string", "contentMediaType": "application/json",
                         "contentSchema": data}}}


def _schema_name(schema: type[Schema]) -> str:
    return schema.__name__.removesuffix("Schema")


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(title="vhdmend remediation service", version="1.0.0",
                   openapi_version="3.1.0", plugins=[MarshmallowPlugin()],
                   info={"description": "Remediate bloated VHD/VHDX chains on storage hosts."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Problem", schema=ProblemSchema)
    seen: set[str] = {"Problem"}

    def ref(schema: type[Schema]) -> dict[str, str]:
        name = _schema_name(schema)
        if name not in seen:
            seen.add(name)
            # Schemas a field refers to by name (JobCreate's per-type options).
            for extra in getattr(schema, "openapi_components", list)():
                ref(extra)
            spec.components.schema(name, schema=schema)
        return {"$ref": f"#/components/schemas/{name}"}

    problem = {"description": "Problem", "content": {MEDIA_TYPE: {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "_openapi", None)
        if meta is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {"summary": meta["summary"], "tags": list(meta["tags"]),
                                  "operationId": f"{rule.endpoint}".replace(".", "_"),
                                  "responses": {}}
            params: list[dict[str, Any]] = [
                {"name": a, "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}}
                for a in sorted(rule.arguments)]
            if meta["query"] is not None:
                params.append({"in": "query", "schema": meta["query"]})
            for name, desc in meta["headers"].items():
                params.append({"name": name, "in": "header", "required": False,
                               "description": desc,
                               "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                          "pattern": "^[\\x21-\\x7e]+$"}})
            if params:
                op["parameters"] = params
            if meta["body"] is not None:
                op["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": ref(meta["body"])}}}
            scope = getattr(view, "_openapi_scope", None)
            if scope:
                op["security"] = [{"bearer": []}]
                op["description"] = f"Needs a token with scope `{scope}` (or `admin`)."
                op["responses"]["401"] = problem
                op["responses"]["403"] = problem
            for status, (desc, schema) in meta["responses"].items():
                resp: dict[str, Any] = {"description": desc}
                if status >= 400:
                    # Every error body is a problem document (409s and 503s included).
                    resp["content"] = problem["content"]
                elif schema is not None and meta["media"] == SSE:
                    resp["content"] = {SSE: {"schema": sse_event(ref(schema))}}
                elif schema is not None:
                    resp["content"] = {meta["media"]: {"schema": ref(schema)}}
                elif meta["media"] != "application/json":
                    resp["content"] = {meta["media"]: {"schema": {"type": "string"}}}
                op["responses"][str(status)] = resp
            if meta.get("links"):
                for status, targets in meta["links"].items():
                    op["responses"][str(status)]["links"] = {
                        target: {"operationId": target,
                                 "parameters": {"job_id": "$response.body#/id"}}
                        for target in targets}
            op["responses"]["default"] = problem
            if meta["body"] is not None or meta["query"] is not None:
                op["responses"]["422"] = problem
            paths.setdefault(path, {})[method.lower()] = op
    for path in sorted(paths):
        spec.path(path=path, operations=paths[path])
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json() -> Response:
    if "VHDMEND_OPENAPI" not in current_app.config:
        current_app.config["VHDMEND_OPENAPI"] = build_spec(current_app)
    return jsonify(current_app.config["VHDMEND_OPENAPI"])


#: The Swagger UI files /docs needs, served from the ``swagger-ui-bundle-v2`` distribution
#: (Swagger UI 5: OpenAPI 3.1), so the page works without Internet access.
DOCS_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")

_DOCS = """<!doctype html>
<html><head><meta charset="utf-8"><title>vhdmend API</title>
<link rel="icon" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"><p>Loading the API description from <a href="/openapi.json">/openapi.json</a>.
</p></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>if (window.SwaggerUIBundle) { SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"}); }
</script></body></html>
"""


def assets_dir() -> str:
    """The folder of the packaged Swagger UI files."""
    import swagger_ui_bundle
    return str(swagger_ui_bundle.swagger_ui_path)


@bp.get("/docs")
def docs() -> Response:
    return Response(_DOCS, mimetype="text/html")


@bp.get("/docs/assets/<name>")
def docs_asset(name: str) -> Response:
    """A Swagger UI file from the installed package (only the ones the page uses)."""
    if name not in DOCS_ASSETS:
        raise NotFound(f"no documentation asset {name!r}")
    return send_from_directory(assets_dir(), name, max_age=86400)
