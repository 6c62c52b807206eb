"""Generations through the HTTP API, on both engines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import Api, api_for

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_create_generation_returns_finished_generation(api: Api) -> None:
    gen = await api.generate(prompt="  A majestic eagle  ", aspectRatio="16:9", meta={"t": [1]})
    assert gen["status"] == "success"
    assert gen["originalPrompt"] == "A majestic eagle"
    assert gen["prompt"] != gen["originalPrompt"]  # autoEnhance rewrote it
    assert gen["aspectRatio"] == "16:9"
    assert gen["meta"] == {"t": [1]}
    image = gen["outputImage"]
    assert image["id"] == gen["outputImageId"]
    assert (image["width"], image["height"]) == (1344, 768)
    assert image["source"] == "generated"
    assert image["storageKey"] == f"acme/web/img/{image['id']}"
    assert image["storageUrl"].endswith(f"/cdn/acme/web/img/{image['id']}")
    assert ISO.match(gen["createdAt"]) and ISO.match(image["createdAt"])
    stored = await api.services.store.read(image["storageKey"])
    assert len(stored) == image["fileSize"]


async def test_auto_enhance_false_sends_prompt_unchanged(api: Api) -> None:
    gen = await api.generate(prompt="plain words", autoEnhance=False)
    assert gen["prompt"] == gen["originalPrompt"] == "plain words"


async def test_absent_flow_id_mints_lazy_flow(api: Api) -> None:
    gen = await api.generate()
    assert gen["flowId"]
    assert (await api.get(f"/api/v1/flows/{gen['flowId']}")).status_code == 404
    again = await api.generate(flowId=gen["flowId"])  # used again: materialises
    flow = (await api.get(f"/api/v1/flows/{gen['flowId']}")).json()["data"]
    assert again["flowId"] == gen["flowId"]
    assert flow["generationCount"] == 2 and flow["imageCount"] == 2


async def test_null_flow_id_means_no_flow(api: Api) -> None:
    gen = await api.generate(flowId=None)
    assert gen["flowId"] is None


async def test_flow_alias_creates_flow_at_once(api: Api) -> None:
    gen = await api.generate(flowAlias="@hero")
    flow = (await api.get(f"/api/v1/flows/{gen['flowId']}")).json()["data"]
    assert flow["aliases"] == {"@hero": gen["outputImageId"]}


async def test_validation_errors_name_the_field(api: Api) -> None:
    cases = [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 5001}, "prompt"),
        ({"prompt": "x", "aspectRatio": "7:3"}, "aspectRatio"),
        ({"prompt": "x", "autoEnhance": "yes"}, "autoEnhance"),
        ({"prompt": "x", "enhancementOptions": {"template": "oil"}}, "enhancementOptions.template"),
        ({"prompt": "x", "alias": "no-at"}, "alias"),
        ({"prompt": "x", "alias": "@last"}, "alias"),
        ({"prompt": "x", "flowId": "nope"}, "flowId"),
        ({"prompt": "x", "referenceImages": ["@missing"]}, "referenceImages"),
        ({"prompt": "x", "meta": {"big": "x" * 17000}}, "meta"),
        ({"prompt": "x", "meta": []}, "meta"),
    ]
    for body, field in cases:
        response = await api.post("/api/v1/generations", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["field"] == field, body


async def test_malformed_json_is_400(api: Api) -> None:
    response = await api.post(
        "/api/v1/generations", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_project_alias_moves_to_new_image(api: Api) -> None:
    first = await api.generate(alias="@hero")
    second = await api.generate(prompt="another", alias="@hero")
    old = (await api.get(f"/api/v1/images/{first['outputImageId']}")).json()["data"]
    assert old["alias"] is None
    resolved = (await api.get("/api/v1/images/resolve/@hero")).json()["data"]
    assert resolved["imageId"] == second["outputImageId"] and resolved["scope"] == "project"


async def test_prompt_aliases_become_references_after_explicit_ones(api: Api) -> None:
    a = await api.upload(alias="@a")
    b = await api.upload(alias="@b")
    gen = await api.generate(
        prompt="@b with @a and @nothing and email@a", referenceImages=["@a"], flowId=None
    )
    assert [r["imageId"] for r in gen["referencedImages"]] == [a["id"], b["id"]]


async def test_more_than_three_references_is_400(api: Api) -> None:
    ids = [(await api.upload())["id"] for _ in range(4)]
    response = await api.post("/api/v1/generations", json={"prompt": "x", "referenceImages": ids})
    assert response.status_code == 400


async def test_list_generations_newest_first_with_pagination(api: Api) -> None:
    made = [await api.generate(prompt=f"p{i}", autoEnhance=False) for i in range(3)]
    body = (await api.get("/api/v1/generations?limit=2")).json()
    assert [g["id"] for g in body["data"]] == [made[2]["id"], made[1]["id"]]
    assert body["pagination"] == {"total": 3, "limit": 2, "offset": 0, "hasMore": True}
    body = (await api.get("/api/v1/generations?limit=500&offset=2")).json()
    assert body["pagination"]["limit"] == 100 and body["pagination"]["hasMore"] is False
    for bad in ("limit=-1", "limit=abc", "offset=1.5"):
        assert (await api.get(f"/api/v1/generations?{bad}")).status_code == 400


async def test_delete_generation_hides_it_and_its_image(api: Api) -> None:
    gen = await api.generate(alias="@gone")
    assert (await api.delete(f"/api/v1/generations/{gen['id']}")).json()["data"] == {
        "id": gen["id"]
    }
    assert (await api.get(f"/api/v1/generations/{gen['id']}")).status_code == 404
    assert (await api.get(f"/api/v1/images/{gen['outputImageId']}")).status_code == 404
    assert (await api.get("/api/v1/images/resolve/@gone")).status_code == 404
    listed = (await api.get("/api/v1/generations")).json()["data"]
    assert gen["id"] not in [g["id"] for g in listed]
    deleted = (await api.get("/api/v1/generations?includeDeleted=true")).json()["data"]
    assert gen["id"] in [g["id"] for g in deleted]
    assert await api.services.store.exists(gen["outputImage"]["storageKey"])  # bytes stay


async def test_regenerate_makes_new_image_and_moves_aliases(api: Api) -> None:
    gen = await api.generate(alias="@hero", flowAlias="@main")
    response = await api.post(f"/api/v1/generations/{gen['id']}/regenerate")
    assert response.status_code == 200
    again = response.json()["data"]
    assert again["id"] == gen["id"] and again["outputImageId"] != gen["outputImageId"]
    resolved = (await api.get("/api/v1/images/resolve/@hero")).json()["data"]
    assert resolved["imageId"] == again["outputImageId"]
    flow = (await api.get(f"/api/v1/flows/{gen['flowId']}")).json()["data"]
    assert flow["aliases"]["@main"] == again["outputImageId"]


async def test_retry_only_failed_generations(api: Api) -> None:
    gen = await api.generate()
    response = await api.post(f"/api/v1/generations/{gen['id']}/retry")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "GENERATION_NOT_FAILED"


async def test_budget_headers_on_generation_routes(api: Api) -> None:
    response = await api.post("/api/v1/generations", json={"prompt": "x"})
    assert response.headers["X-RateLimit-Limit"] == "100"
    assert response.headers["X-RateLimit-Remaining"] == "99"
    assert int(response.headers["X-RateLimit-Reset"]) > 0


async def test_edit_generation_meta_and_detach_flow(api: Api) -> None:
    gen = await api.generate()
    response = await api.put(
        f"/api/v1/generations/{gen['id']}", json={"meta": {"a": 1}, "flowId": None}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["meta"] == {"a": 1} and data["flowId"] is None


async def test_unknown_generation_is_404(api: Api) -> None:
    for ident in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        response = await api.get(f"/api/v1/generations/{ident}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "GENERATION_NOT_FOUND"


async def test_flow_alias_without_a_flow_is_400(api: Api) -> None:
    response = await api.post(
        "/api/v1/generations", json={"prompt": "x", "flowId": None, "flowAlias": "@a"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "flowAlias"


async def test_spent_key_budget_is_429_with_retry_after(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async for small in api_for(request, tmp_path, "sqlite-local", key_budget_per_hour=2):
        for remaining in ("1", "0"):
            ok = await small.post("/api/v1/generations", json={"prompt": "x", "autoEnhance": False})
            assert ok.headers["X-RateLimit-Remaining"] == remaining
        spent = await small.post("/api/v1/generations", json={"prompt": "x"})
        assert spent.status_code == 429
        assert spent.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert int(spent.headers["Retry-After"]) >= 1
        assert spent.headers["X-RateLimit-Remaining"] == "0"
        listed = (await small.get("/api/v1/generations")).json()["pagination"]["total"]
        assert listed == 2  # the refused request started nothing
