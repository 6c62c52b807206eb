"""Regenerate moves only the aliases that point at the old output, on both engines."""

from __future__ import annotations

from tests.harness import Api


async def resolved(api: Api, alias: str, flow_id: str | None = None) -> str | None:
    query = f"?flowId={flow_id}" if flow_id else ""
    response = await api.get(f"/api/v1/images/resolve/{alias}{query}")
    return response.json()["data"]["imageId"] if response.status_code == 200 else None


async def test_regenerate_after_the_output_was_deleted_takes_no_alias_back(api: Api) -> None:
    gen = await api.generate(alias="@a", flowAlias="@f")
    deleted = await api.delete(f"/api/v1/images/{gen['outputImageId']}")
    assert deleted.status_code == 200  # its aliases are released
    other = await api.upload(alias="@a")
    flow = await api.put(
        f"/api/v1/flows/{gen['flowId']}/aliases", json={"aliases": {"@f": other["id"]}}
    )
    assert flow.status_code == 200
    response = await api.post(f"/api/v1/generations/{gen['id']}/regenerate")
    assert response.status_code == 200, response.text
    again = response.json()["data"]
    assert again["outputImageId"] not in (gen["outputImageId"], other["id"])
    assert await resolved(api, "@a") == other["id"]
    aliases = (await api.get(f"/api/v1/flows/{gen['flowId']}")).json()["data"]["aliases"]
    assert aliases == {"@f": other["id"]}
    new_image = (await api.get(f"/api/v1/images/{again['outputImageId']}")).json()["data"]
    assert new_image["alias"] is None


async def test_regenerate_moves_aliases_still_on_the_old_output(api: Api) -> None:
    gen = await api.generate(alias="@a")
    other = await api.upload(alias="@b")
    response = await api.post(f"/api/v1/generations/{gen['id']}/regenerate")
    again = response.json()["data"]
    assert await resolved(api, "@a") == again["outputImageId"]
    assert await resolved(api, "@b") == other["id"]


async def test_regenerate_after_an_alias_moved_elsewhere_leaves_it_there(api: Api) -> None:
    gen = await api.generate(alias="@a")
    other = await api.upload(alias="@a")  # the alias moves to the upload; the output keeps none
    response = await api.post(f"/api/v1/generations/{gen['id']}/regenerate")
    assert response.status_code == 200
    assert await resolved(api, "@a") == other["id"]
