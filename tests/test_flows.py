"""Flows through the HTTP API, on both engines."""

from __future__ import annotations

from tests.harness import Api


async def test_create_and_get_flow(api: Api) -> None:
    response = await api.post("/api/v1/flows", json={"meta": {"name": "Campaign"}})
    assert response.status_code == 201
    flow = response.json()["data"]
    assert flow["aliases"] == {} and flow["meta"] == {"name": "Campaign"}
    assert flow["generationCount"] == 0 and flow["imageCount"] == 0
    assert (await api.get(f"/api/v1/flows/{flow['id']}")).json()["data"]["id"] == flow["id"]


async def test_flow_lists_its_generations_and_images(api: Api) -> None:
    flow = (await api.post("/api/v1/flows", json={})).json()["data"]
    gen = await api.generate(flowId=flow["id"])
    up = await api.upload(flowId=flow["id"])
    gens = (await api.get(f"/api/v1/flows/{flow['id']}/generations")).json()
    imgs = (await api.get(f"/api/v1/flows/{flow['id']}/images")).json()
    assert [g["id"] for g in gens["data"]] == [gen["id"]]
    assert {i["id"] for i in imgs["data"]} == {gen["outputImageId"], up["id"]}
    assert imgs["pagination"]["total"] == 2


async def test_counts_ignore_deleted_rows(api: Api) -> None:
    flow = (await api.post("/api/v1/flows", json={})).json()["data"]
    gen = await api.generate(flowId=flow["id"])
    await api.generate(flowId=flow["id"])
    await api.delete(f"/api/v1/generations/{gen['id']}")
    counted = (await api.get(f"/api/v1/flows/{flow['id']}")).json()["data"]
    assert counted["generationCount"] == 1 and counted["imageCount"] == 1


async def test_put_aliases_merges_and_validates(api: Api) -> None:
    flow = (await api.post("/api/v1/flows", json={})).json()["data"]
    a, b = await api.upload(), await api.upload()
    url = f"/api/v1/flows/{flow['id']}/aliases"
    await api.put(url, json={"aliases": {"@a": a["id"]}})
    merged = (await api.put(url, json={"aliases": {"@b": b["id"]}})).json()["data"]
    assert merged["aliases"] == {"@a": a["id"], "@b": b["id"]}
    other = await api.new_key("other", "proj")
    foreign = await api.http.post(
        "/api/v1/images/upload",
        headers={"X-API-Key": other},
        files={"file": ("a.png", (await api.services.store.read(a["storageKey"])))},
    )
    foreign_id = foreign.json()["data"]["id"]
    for bad in ({"@c": foreign_id}, {"@last": a["id"]}, {"c": a["id"]}, {"@c": "x"}):
        assert (await api.put(url, json={"aliases": bad})).status_code == 400, bad
    assert (await api.put(url, json={"aliases": []})).status_code == 400


async def test_delete_flow_alias(api: Api) -> None:
    gen = await api.generate(flowAlias="@x")
    url = f"/api/v1/flows/{gen['flowId']}/aliases/@x"
    assert (await api.delete(url)).json()["data"]["aliases"] == {}
    missing = await api.delete(url)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ALIAS_NOT_FOUND"


async def test_delete_flow_keeps_generations_and_images(api: Api) -> None:
    gen = await api.generate(flowAlias="@x")
    assert (await api.delete(f"/api/v1/flows/{gen['flowId']}")).status_code == 200
    assert (await api.get(f"/api/v1/flows/{gen['flowId']}")).status_code == 404
    kept = (await api.get(f"/api/v1/generations/{gen['id']}")).json()["data"]
    assert kept["flowId"] is None
    image = (await api.get(f"/api/v1/images/{gen['outputImageId']}")).json()["data"]
    assert image["flowId"] is None


async def test_list_flows_paginates(api: Api) -> None:
    for _ in range(3):
        await api.post("/api/v1/flows", json={})
    body = (await api.get("/api/v1/flows?limit=2&offset=1")).json()
    assert len(body["data"]) == 2
    assert body["pagination"] == {"total": 3, "limit": 2, "offset": 1, "hasMore": False}
