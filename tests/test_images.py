"""Images, aliases and uploads through the HTTP API, on both engines."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image as PILImage

from tests.harness import Api, png_bytes


async def test_upload_measures_and_stores_the_image(api: Api) -> None:
    data = png_bytes(40, 30)
    image = await api.upload(data, alias="@logo", meta='{"k": "v"}')
    assert image["source"] == "uploaded"
    assert (image["width"], image["height"], image["fileSize"]) == (40, 30, len(data))
    assert image["mimeType"] == "image/png" and image["alias"] == "@logo"
    assert image["meta"] == {"k": "v"}
    assert await api.services.store.read(image["storageKey"]) == data


async def test_upload_type_comes_from_the_bytes_not_the_header(api: Api) -> None:
    jpeg = png_bytes(8, 8, fmt="JPEG")
    response = await api.post("/api/v1/images/upload", files={"file": ("x.png", jpeg, "image/png")})
    assert response.status_code == 201
    assert response.json()["data"]["mimeType"] == "image/jpeg"
    webp = png_bytes(8, 8, fmt="WEBP")
    response = await api.post("/api/v1/images/upload", files={"file": ("x", webp, "text/plain")})
    assert response.json()["data"]["mimeType"] == "image/webp"


def declared_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares `width` x `height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


async def test_upload_rejections(api: Api) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    truncated = png_bytes(64, 64)[:60]
    bomb = io.BytesIO()
    PILImage.new("1", (8000, 6000)).save(bomb, "PNG")  # 48 MP, a few KB on disk
    cases = [
        (svg, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"", 400, "VALIDATION_ERROR"),
        (truncated, 400, "VALIDATION_ERROR"),
        (bomb.getvalue(), 400, "VALIDATION_ERROR"),
        (declared_png(50_000, 50_000), 400, "VALIDATION_ERROR"),
        (b"\x89PNG\r\n\x1a\n" + b"<html>" * 10, 400, "VALIDATION_ERROR"),
        (png_bytes() + b"\0" * (5 * 1024 * 1024), 413, "PAYLOAD_TOO_LARGE"),
    ]
    for data, status, code in cases:
        response = await api.post(
            "/api/v1/images/upload", files={"file": ("f.png", data, "image/png")}
        )
        assert response.status_code == status, (status, response.text)
        assert response.json()["error"]["code"] == code
    listed = (await api.get("/api/v1/images")).json()
    assert listed["pagination"]["total"] == 0


async def test_upload_needs_a_file_and_valid_meta(api: Api) -> None:
    response = await api.post(
        "/api/v1/images/upload", data={"alias": "@x"}, files={"other": ("a", b"1")}
    )
    assert response.status_code == 400
    response = await api.post(
        "/api/v1/images/upload", files={"file": ("a.png", png_bytes())}, data={"meta": "{bad"}
    )
    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "meta"


async def test_get_image_by_id_or_alias(api: Api) -> None:
    image = await api.upload(alias="@pic")
    by_id = (await api.get(f"/api/v1/images/{image['id']}")).json()["data"]
    by_alias = (await api.get("/api/v1/images/@pic")).json()["data"]
    assert by_id == by_alias
    missing = await api.get("/api/v1/images/@nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ALIAS_NOT_FOUND"


async def test_resolution_order_technical_then_flow_then_project(api: Api) -> None:
    project_img = await api.upload(alias="@hero")
    gen = await api.generate(flowAlias="@hero")
    flow_id = gen["flowId"]
    flow_hit = (await api.get(f"/api/v1/images/resolve/@hero?flowId={flow_id}")).json()["data"]
    assert flow_hit["scope"] == "flow" and flow_hit["imageId"] == gen["outputImageId"]
    project_hit = (await api.get("/api/v1/images/resolve/@hero")).json()["data"]
    assert project_hit["scope"] == "project" and project_hit["imageId"] == project_img["id"]
    last = (await api.get(f"/api/v1/images/resolve/@last?flowId={flow_id}")).json()["data"]
    assert last["scope"] == "technical" and last["imageId"] == gen["outputImageId"]
    up = await api.upload(flowId=flow_id)
    upload = (await api.get(f"/api/v1/images/resolve/@upload?flowId={flow_id}")).json()["data"]
    assert upload["imageId"] == up["id"]
    no_flow = await api.get("/api/v1/images/resolve/@last")
    assert no_flow.status_code == 400


async def test_first_and_last_in_a_flow(api: Api) -> None:
    first = await api.generate(prompt="one")
    second = await api.generate(prompt="two", flowId=first["flowId"])
    fid = first["flowId"]
    got_first = (await api.get(f"/api/v1/images/resolve/@first?flowId={fid}")).json()["data"]
    got_last = (await api.get(f"/api/v1/images/resolve/@last?flowId={fid}")).json()["data"]
    assert got_first["imageId"] == first["outputImageId"]
    assert got_last["imageId"] == second["outputImageId"]


async def test_update_image_alias_focal_point_meta(api: Api) -> None:
    image = await api.upload()
    response = await api.put(
        f"/api/v1/images/{image['id']}",
        json={"alias": "@new", "focalPoint": {"x": 0.5, "y": 0.3}, "meta": {"d": 1}},
    )
    data = response.json()["data"]
    assert data["alias"] == "@new" and data["focalPoint"] == {"x": 0.5, "y": 0.3}
    assert data["meta"] == {"d": 1}
    for bad in ({"focalPoint": {"x": 2, "y": 0}}, {"alias": "@first"}, {"meta": "x"}):
        assert (await api.put(f"/api/v1/images/{image['id']}", json=bad)).status_code == 400
    cleared = await api.put(f"/api/v1/images/{image['id']}", json={"alias": None})
    assert cleared.json()["data"]["alias"] is None


async def test_alias_route_assigns_and_clears(api: Api) -> None:
    a = await api.upload()
    b = await api.upload()
    await api.put(f"/api/v1/images/{a['id']}/alias", json={"alias": "@x"})
    await api.put(f"/api/v1/images/{b['id']}/alias", json={"alias": "@x"})
    assert (await api.get(f"/api/v1/images/{a['id']}")).json()["data"]["alias"] is None
    cleared = await api.put(f"/api/v1/images/{b['id']}/alias", json={"alias": None})
    assert cleared.json()["data"]["alias"] is None


async def test_delete_image_releases_aliases_everywhere(api: Api) -> None:
    gen = await api.generate(alias="@hero", flowAlias="@main")
    image_id = gen["outputImageId"]
    assert (await api.delete(f"/api/v1/images/{image_id}")).status_code == 200
    assert (await api.get(f"/api/v1/images/{image_id}")).status_code == 404
    flow = (await api.get(f"/api/v1/flows/{gen['flowId']}")).json()["data"]
    assert flow["aliases"] == {} and flow["imageCount"] == 0
    again = await api.upload(alias="@hero")  # the alias is free again
    assert again["alias"] == "@hero"
    listed = (await api.get("/api/v1/images?includeDeleted=true")).json()["data"]
    deleted = next(i for i in listed if i["id"] == image_id)
    assert deleted["deletedAt"] is not None and deleted["alias"] is None


async def test_list_images_filters(api: Api) -> None:
    up = await api.upload(alias="@u")
    gen = await api.generate()
    only_uploaded = (await api.get("/api/v1/images?source=uploaded")).json()["data"]
    assert [i["id"] for i in only_uploaded] == [up["id"]]
    by_flow = (await api.get(f"/api/v1/images?flowId={gen['flowId']}")).json()["data"]
    assert [i["id"] for i in by_flow] == [gen["outputImageId"]]
    by_alias = (await api.get("/api/v1/images?alias=@u")).json()["data"]
    assert [i["id"] for i in by_alias] == [up["id"]]
    assert (await api.get("/api/v1/images?source=drawn")).status_code == 400
