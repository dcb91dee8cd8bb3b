"""The HTTP API's surface stays what it was: every (path, method) of the OpenAPI document, with
its operation id, status codes, parameters and request body fields, equals the committed
snapshot ``tests/data/openapi_routes.json`` (taken from the API before it was split into routes
per resource). Response schemas may become more precise; no route may appear or vanish.

After a deliberate change of the API, regenerate the snapshot with
``.venv/bin/python tests/test_openapi_stable.py`` and commit it with the change."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from pipeline.config.service import FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.http.app import create_app
from pipeline.service.service import FaceStreamService

SNAPSHOT = Path(__file__).parent / "data" / "openapi_routes.json"
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def _openapi() -> dict[str, Any]:
    """The OpenAPI document of an app over a stand-in service: building the document reads the
    routes only, never the service."""
    stand_in = SimpleNamespace(  # no liveness engine here: liveness off (on by default)
        config=FaceStreamConfig(liveness=LivenessConfig(enabled=False)),
        services=SimpleNamespace(liveness_engine=None),
    )
    app = create_app(cast(FaceStreamService, stand_in), token="openapi-snapshot-token")
    return app.openapi()


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    node = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _request_body(document: dict[str, Any], operation: dict[str, Any]) -> object:
    body = operation.get("requestBody")
    if body is None:
        return None
    fields: dict[str, Any] = {}
    for media_type, content in sorted(body["content"].items()):
        schema = _resolve(document, content["schema"])
        required = set(schema.get("required", []))
        properties = schema.get("properties", {})
        fields[media_type] = sorted(
            f"{name}{'' if name in required else '?'}" for name in properties
        )
    return {"required": bool(body.get("required", False)), "fields": fields}


def route_surface(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``"METHOD /path"`` -> operation id, status codes, parameters and request body fields."""
    paths = document["paths"]
    surface: dict[str, dict[str, Any]] = {}
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            parameters = [
                f"{parameter['in']}:{parameter['name']}{'' if parameter.get('required') else '?'}"
                for parameter in operation.get("parameters", [])
            ]
            surface[f"{method.upper()} {path}"] = {
                "operation_id": operation["operationId"],
                "status_codes": sorted(operation["responses"]),
                "parameters": sorted(parameters),
                "request_body": _request_body(document, operation),
            }
    return dict(sorted(surface.items()))


def test_routes_and_status_codes_match_the_snapshot() -> None:
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    actual = route_surface(_openapi())
    assert sorted(actual) == sorted(expected), "a route appeared or vanished"
    for route, surface in expected.items():
        assert actual[route] == surface, route


def test_every_json_answer_has_a_model() -> None:
    """Routes answer with pydantic models: each 2xx JSON answer names its schema."""
    for route, operation in _operations(_openapi()):
        for status, response in operation["responses"].items():
            content = response.get("content", {}).get("application/json")
            if status.startswith("2") and content is not None and content["schema"]:
                assert "$ref" in content["schema"], f"{route} {status}: {content['schema']}"


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method in _METHODS
    ]


if __name__ == "__main__":  # regenerate the snapshot after a deliberate API change
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(route_surface(_openapi()), indent=2) + "\n", encoding="utf-8")
