"""HTTP: /api/v1/images."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from cache.errors import (
    AliasNotFound,
    ApiError,
    PayloadTooLarge,
    ValidationError,
)
from origin.aliases import (
    ALIAS_PATTERN,
    TECHNICAL,
    assign_project_alias,
    check_alias,
    find_image,
    resolve_alias,
    set_flow_alias,
)
from origin.auth import project_of, services_of
from origin.envelope import (
    is_uuid,
    meta_field,
    ok,
    page,
    pagination,
    parse_json,
    query_bool,
    read_json,
    resource,
)
from origin.flows import ensure_flow
from origin.images import (
    aliases_moved,
    forget_everywhere,
    image_json,
    list_images,
    new_image,
    record_changed,
    soft_delete_image,
    store_image,
)
from origin.imaging import inspect_image_async
from origin.models import new_id, utcnow

SOURCES = ("generated", "uploaded")


def _query_flow_id(request: Request) -> str | None:
    flow_id = request.query_params.get("flowId")
    if flow_id is None:
        return None
    if not is_uuid(flow_id):
        raise ValidationError("flowId must be a UUID.", field="flowId")
    return flow_id.lower()


async def upload(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    settings = services.settings
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ValidationError(
            "Send the image as multipart/form-data with a file field.", field="file"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
        raise PayloadTooLarge(f"The upload is larger than {settings.max_upload_bytes} bytes.")
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=64 * 1024)
    except ApiError:
        raise
    except Exception as exc:
        raise ValidationError(
            f"The multipart body could not be read: {exc}", field="file"
        ) from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ValidationError("A file field with the image is required.", field="file")
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise PayloadTooLarge(f"The image is larger than {settings.max_upload_bytes} bytes.")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()
    alias = fields.get("alias") or None
    flow_alias = fields.get("flowAlias") or None
    if alias is not None:
        check_alias(alias)
    if flow_alias is not None:
        check_alias(flow_alias, "flowAlias")
    meta = {}
    if fields.get("meta"):
        value = parse_json(fields["meta"], "meta")
        meta = meta_field({"meta": value}, settings.max_meta_bytes) or {}
    if "flowId" not in fields:
        flow_id, materialise = new_id(), False
    elif fields["flowId"] in ("", "null"):
        if flow_alias is not None:  # as POST /generations: no flow to hold the alias
            raise ValidationError("flowAlias needs a flow; flowId is null.", field="flowAlias")
        flow_id, materialise = None, False
    elif is_uuid(fields["flowId"]):
        flow_id, materialise = fields["flowId"].lower(), True
    else:
        raise ValidationError("flowId must be a UUID or null.", field="flowId")
    facts = await inspect_image_async(data, settings.max_upload_bytes, settings.max_image_pixels)
    async with services.sessions() as session:
        flow = None
        if flow_id is not None and (materialise or flow_alias):
            flow = await ensure_flow(session, project.project_id, flow_id)
        image = new_image(project, facts, source="uploaded", flow_id=flow_id, meta=meta)
        image = await store_image(session, services.store, image, data)
        renamed: tuple[str, ...] = ()
        if alias:
            renamed = await assign_project_alias(session, image, alias)
        if flow is not None and flow_alias:
            await set_flow_alias(session, flow, flow_alias, image.id)
        await session.commit()
        if renamed:  # the alias moved here from another image: edges must follow at once
            await forget_everywhere(services, project, aliases_moved(project, renamed))
        return ok(image_json(image, project, settings.public_url), 201)


async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = pagination(request)
    source = request.query_params.get("source")
    if source is not None and source not in SOURCES:
        raise ValidationError("source must be generated or uploaded.", field="source")
    flow_id = _query_flow_id(request)
    async with services.sessions() as session:
        rows, total = await list_images(
            session,
            project.project_id,
            limit,
            offset,
            include_deleted=query_bool(request, "includeDeleted"),
            source=source,
            flow_id=flow_id,
            alias=request.query_params.get("alias"),
        )
        items = [image_json(i, project, services.settings.public_url) for i in rows]
    return page(items, total, limit, offset)


async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    flow_id = _query_flow_id(request)
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"], flow_id)
        return ok(image_json(image, project, services.settings.public_url))


async def resolve(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    alias = request.path_params["alias"]
    flow_id = _query_flow_id(request)
    if not ALIAS_PATTERN.fullmatch(alias):
        raise ValidationError("alias must match @[A-Za-z0-9_-]{1,49}.", field="alias")
    if alias in TECHNICAL and flow_id is None:
        raise ValidationError(f"{alias} needs a flowId to resolve.", field="flowId")
    async with services.sessions() as session:
        resolved = await resolve_alias(session, project.project_id, alias, flow_id)
        if resolved is None:
            raise AliasNotFound(f"No image holds the alias {alias}.")
        return ok(
            {
                "alias": alias,
                "imageId": resolved.image.id,
                "scope": resolved.scope,
                "flowId": resolved.flow_id,
                "image": image_json(resolved.image, project, services.settings.public_url),
            }
        )


async def update(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    meta = meta_field(body, services.settings.max_meta_bytes)
    focal = body.get("focalPoint", ...)
    if focal is not ... and focal is not None:
        if (
            not isinstance(focal, dict)
            or not {"x", "y"} <= set(focal)
            or not all(
                isinstance(focal[c], int | float)
                and not isinstance(focal[c], bool)
                and 0 <= focal[c] <= 1
                for c in ("x", "y")
            )
        ):
            raise ValidationError(
                "focalPoint must be {x, y} with numbers in [0, 1].", field="focalPoint"
            )
    alias = body.get("alias", ...)
    if alias is not ... and alias is not None:
        check_alias(alias)
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"])
        renamed: tuple[str, ...] = ()
        if alias is not ...:
            renamed = await assign_project_alias(session, image, alias)
        moved = None
        if focal is not ...:
            point = None if focal is None else {"x": float(focal["x"]), "y": float(focal["y"])}
            if point != image.focal_point:
                image.focal_point = point
                moved = await record_changed(session, image)  # its crops change
        if meta is not None:
            image.meta = meta
        image.updated_at = utcnow()
        await session.commit()
        if moved is not None:
            await forget_everywhere(services, project, moved)
        if renamed:
            await forget_everywhere(services, project, aliases_moved(project, renamed))
        return ok(image_json(image, project, services.settings.public_url))


async def put_alias(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    if "alias" not in body:
        raise ValidationError("alias is required (a string or null).", field="alias")
    alias = body["alias"]
    if alias is not None:
        check_alias(alias)
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"])
        renamed = await assign_project_alias(session, image, alias)
        await session.commit()
        if renamed:
            await forget_everywhere(services, project, aliases_moved(project, renamed))
        return ok(image_json(image, project, services.settings.public_url))


async def delete(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"])
        event = await soft_delete_image(session, image)
        await session.commit()
    await forget_everywhere(services, project, event)
    return ok({"id": image.id})


routes = [
    resource("/api/v1/images/upload", post=upload),
    resource("/api/v1/images", get=list_),
    resource("/api/v1/images/resolve/{alias}", get=resolve),
    resource("/api/v1/images/{id}", get=get, put=update, delete=delete),
    resource("/api/v1/images/{id}/alias", put=put_alias),
]
