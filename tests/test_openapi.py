"""/openapi.json is generated from the routes' operations and models (origin/schemas/): every
REST route is there with its request and response schemas, and `data` is described in full."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from origin.app import create_origin
from origin.envelope import Resource
from origin.openapi import ROUTES, openapi_document, operations
from tests.harness import Api, make_settings

REST = {(method, path) for method, path, *_ in ROUTES}
RESOURCES = {"ImageOut", "GenerationOut", "FlowOut", "ScopeOut", "KeyOut", "CreatedKey"}


async def document(api: Api) -> dict[str, Any]:
    response = await api.http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def rest_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if (method, path) in REST or path in ("/health", "/ready")
    ]


async def test_every_success_response_describes_its_data(sqlite_api: Api) -> None:
    doc = await document(sqlite_api)
    found = rest_operations(doc)
    assert len(found) == len(REST) + 2
    for method, path, op in found:
        successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert successes, (method, path)
        for code, response in successes.items():
            envelope = resolve(doc, response["content"]["application/json"]["schema"])
            assert {"success", "data"} <= set(envelope["required"]), (method, path, code)
            data = resolve(doc, envelope["properties"]["data"])
            if data.get("type") == "array":
                data = resolve(doc, data["items"])
            assert data.get("properties"), (method, path, code, data)


async def test_each_resource_has_a_named_schema(sqlite_api: Api) -> None:
    doc = await document(sqlite_api)
    schemas = doc["components"]["schemas"]
    assert RESOURCES <= set(schemas)
    image = schemas["ImageOut"]
    assert "storageUrl" in image["properties"] and "storageUrl" in image["required"]
    assert schemas["GenerationOut"]["properties"]["outputImage"]["anyOf"][0] == {
        "$ref": "#/components/schemas/ImageOut"
    }


async def test_bodies_and_queries_come_from_the_models(sqlite_api: Api) -> None:
    doc = await document(sqlite_api)
    create = doc["paths"]["/api/v1/generations"]["post"]
    body = resolve(doc, create["requestBody"]["content"]["application/json"]["schema"])
    assert body["required"] == ["prompt"]
    assert body["properties"]["prompt"]["maxLength"] == 5000
    assert body["properties"]["flowId"]["anyOf"][0]["format"] == "uuid"
    listing = {p["name"]: p for p in doc["paths"]["/api/v1/generations"]["get"]["parameters"]}
    assert set(listing) == {"limit", "offset", "status", "flowId", "includeDeleted"}
    assert listing["status"]["schema"]["enum"] == ["pending", "processing", "success", "failed"]
    upload = doc["paths"]["/api/v1/images/upload"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and {"alias", "flowId", "meta"} <= set(form["properties"])


async def test_errors_share_the_envelope_schema(sqlite_api: Api) -> None:
    doc = await document(sqlite_api)
    for method, path, op in rest_operations(doc):
        for code, response in op["responses"].items():
            if code[0] in "45":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)


def test_every_route_of_the_app_is_described(tmp_path: Path) -> None:
    app = create_origin(make_settings(tmp_path))
    described = {(m, p) for m, p, _ in operations(app.routes)}
    api_routes = {
        (method.lower(), route.path)
        for route in app.routes
        if isinstance(route, Resource) and route.path.startswith("/api/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert api_routes <= described
    assert {(m, p) for m, p, *_ in ROUTES} == {(m, p) for m, p in described if p.startswith("/api")}
    doc = openapi_document(app.routes, "http://test")
    assert {(m, p) for m, p in described} <= {
        (m, p) for p, item in doc["paths"].items() for m in item
    }
