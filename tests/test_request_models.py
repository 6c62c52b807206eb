"""Each family of request models (origin/schemas/requests.py) refuses wrong types, numbers out
of range and huge numbers with a 400 naming the field, never a 500; JSON's 5.0 is still 5."""

from __future__ import annotations

import json
from typing import Any

import httpx

from origin.keys import create_key
from tests.harness import Api

UUID = "0b7e9a52-3c1d-4f6e-9a8b-2d4c6e8f0a1b"
HUGE = 10**30


def refused(response: httpx.Response, field: str) -> bool:
    if response.status_code != 400:
        return False
    error = response.json()["error"]
    return error["code"] in ("VALIDATION_ERROR", "SCOPE_INVALID_FORMAT") and (
        error["details"]["field"] == field
    )


async def each_refused(api: Api, method: str, url: str, cases: list[tuple[Any, str]]) -> None:
    for body, field in cases:
        content = body if isinstance(body, str) else json.dumps(body)
        response = await api.http.request(
            method,
            url,
            content=content,
            headers={**api.headers, "Content-Type": "application/json"},
        )
        assert refused(response, field), (url, body, response.status_code, response.text)


async def test_generation_bodies(api: Api) -> None:
    await each_refused(
        api,
        "POST",
        "/api/v1/generations",
        [
            ({"prompt": 5}, "prompt"),
            ({"prompt": ["a fox"]}, "prompt"),
            ({"prompt": "x", "autoEnhance": 1}, "autoEnhance"),
            ({"prompt": "x", "referenceImages": "@a"}, "referenceImages"),
            ({"prompt": "x", "referenceImages": [1]}, "referenceImages.0"),
            ({"prompt": "x", "referenceImages": ["@a", "@b", "@c", "@d"]}, "referenceImages"),
            ({"prompt": "x", "enhancementOptions": []}, "enhancementOptions"),
            ({"prompt": "x", "flowId": 5}, "flowId"),
            ({"prompt": "x", "flowId": UUID + "\n"}, "flowId"),
            ({"prompt": "x", "meta": "note"}, "meta"),
        ],
    )
    generation = await api.generate(prompt="a fox")
    url = f"/api/v1/generations/{generation['id']}"
    await each_refused(api, "PUT", url, [({"flowId": "x"}, "flowId"), ({"meta": 1}, "meta")])


async def test_flow_bodies(api: Api) -> None:
    await each_refused(api, "POST", "/api/v1/flows", [({"meta": [1]}, "meta")])
    flow = (await api.post("/api/v1/flows", json={})).json()["data"]["id"]
    await each_refused(
        api,
        "PUT",
        f"/api/v1/flows/{flow}/aliases",
        [
            ({}, "aliases"),
            ({"aliases": []}, "aliases"),
            ({"aliases": {"@a": 5}}, "aliases.@a"),
            ({"aliases": {"no-at": UUID}}, "aliases.no-at"),
            ({"aliases": {"@last": UUID}}, "aliases.@last"),
        ],
    )


async def test_image_bodies(api: Api) -> None:
    image = await api.upload()
    url = f"/api/v1/images/{image['id']}"
    await each_refused(
        api,
        "PUT",
        url,
        [
            ({"alias": 5}, "alias"),
            ({"focalPoint": {"x": 2, "y": 0}}, "focalPoint.x"),
            ({"focalPoint": {"x": True, "y": 0}}, "focalPoint.x"),
            ({"focalPoint": {"x": 0.5}}, "focalPoint.y"),
            ({"focalPoint": "middle"}, "focalPoint"),
        ],
    )
    await each_refused(api, "PUT", url + "/alias", [({}, "alias"), ({"alias": []}, "alias")])
    moved = await api.put(url, json={"focalPoint": {"x": 1, "y": 0.25}})
    assert moved.status_code == 200 and moved.json()["data"]["focalPoint"] == {"x": 1, "y": 0.25}


async def test_scope_bodies(api: Api) -> None:
    await each_refused(
        api,
        "POST",
        "/api/v1/live/scopes",
        [
            ({}, "slug"),
            ({"slug": 5}, "slug"),
            ({"slug": "s", "allowNewGenerations": "yes"}, "allowNewGenerations"),
            ({"slug": "s", "newGenerationsLimit": HUGE}, "newGenerationsLimit"),
            ({"slug": "s", "newGenerationsLimit": 2.5}, "newGenerationsLimit"),
            ({"slug": "s", "newGenerationsLimit": -1}, "newGenerationsLimit"),
        ],
    )
    made = await api.post("/api/v1/live/scopes", json={"slug": "s", "newGenerationsLimit": 5.0})
    assert made.status_code == 201 and made.json()["data"]["newGenerationsLimit"] == 5
    await each_refused(
        api,
        "POST",
        "/api/v1/live/scopes/s/regenerate",
        [({"imageId": 5}, "imageId"), ({"imageId": "x"}, "imageId")],
    )


async def test_signing_bodies(api: Api) -> None:
    await each_refused(
        api,
        "POST",
        "/api/v1/live/sign",
        [
            ({"path": 5}, "path"),
            ({"path": "/cdn/acme/web/live/s?prompt=x", "prompt": "y"}, "prompt"),
            ({"scope": "s"}, "prompt"),
            ({"prompt": "x"}, "scope"),
            ({"scope": "s", "prompt": "x", "expiresInSeconds": HUGE}, "expiresInSeconds"),
            ({"scope": "s", "prompt": "x", "template": "oil"}, "template"),
        ],
    )
    await each_refused(
        api,
        "PUT",
        "/api/v1/live/signing",
        [({}, "requireSignedUrls"), ({"requireSignedUrls": "true"}, "requireSignedUrls")],
    )


async def test_key_bodies(api: Api) -> None:
    async with api.services.sessions() as session:
        master = (await create_key(session, "master", name="admin")).secret
        await session.commit()
    admin = Api(api.http, api.services, master, api.org, api.project)
    project = {"organizationSlug": "o", "projectSlug": "p"}
    await each_refused(
        admin,
        "POST",
        "/api/admin/keys",
        [
            ({"type": "robot"}, "type"),
            ({"type": "project"}, "organizationSlug"),
            ({"organizationSlug": "o"}, "projectSlug"),
            ({**project, "expiresInDays": 1.5}, "expiresInDays"),
            ({**project, "expiresInDays": HUGE}, "expiresInDays"),
            ({**project, "name": "n" * 201}, "name"),
            ({**project, "name": 5}, "name"),
        ],
    )


async def test_queries(api: Api) -> None:
    for url, field in (
        ("/api/v1/generations?limit=-1", "limit"),
        ("/api/v1/generations?offset=1.5", "offset"),
        ("/api/v1/generations?status=done", "status"),
        ("/api/v1/generations?includeDeleted=yes", "includeDeleted"),
        ("/api/v1/images?source=drawn", "source"),
        ("/api/v1/images?flowId=x", "flowId"),
        ("/api/v1/flows?limit=x", "limit"),
        ("/api/v1/live/scopes?offset=%2B1", "offset"),
    ):
        response = await api.get(url)
        assert refused(response, field), (url, response.text)
    huge = "9" * 100  # clamped: 100 rows at most, an offset inside a BIGINT
    listed = await api.get(f"/api/v1/images?limit={huge}&offset={huge}")
    assert listed.status_code == 200, listed.text
    assert listed.json()["pagination"]["limit"] == 100


async def test_json_no_column_can_hold_is_refused(api: Api) -> None:
    for number in ("9" * 5000, "1e400", "-1e400", "NaN", "Infinity"):
        scope = '{"slug": "s", "newGenerationsLimit": ' + number + "}"
        flow = '{"meta": {"a": ' + number + "}}"
        await each_refused(api, "POST", "/api/v1/live/scopes", [(scope, "body")])
        await each_refused(api, "POST", "/api/v1/flows", [(flow, "body")])
    assert (await api.get("/api/v1/flows")).json()["data"] == []
