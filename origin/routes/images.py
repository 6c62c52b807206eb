"""HTTP: /api/v1/images."""

from __future__ import annotations

from collections import Counter

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
    assign_project_alias,
    find_image,
    resolve_alias,
    set_flow_alias,
)
from origin.auth import project_of, services_of
from origin.envelope import Resource, ok, operation, page
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
from origin.schemas.fields import TECHNICAL_ALIASES, AliasName
from origin.schemas.requests import (
    FlowScoped,
    ImageAlias,
    ImageQuery,
    ImageUpdate,
    UploadForm,
    given,
)
from origin.schemas.responses import Deleted, ImageOut, ResolvedAlias
from origin.schemas.validation import RequestModel, read_body, read_query, validate


class AliasPath(RequestModel):
    alias: AliasName


@operation(summary="Upload an image", form=UploadForm, response=ImageOut, status=201)
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
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        for name, count in Counter(k for k, _ in form.multi_items()).items():
            if count > 1:
                raise ValidationError(f"{name} is given more than once.", field=name)
    finally:
        await form.close()
    form_fields = validate(UploadForm, fields, {"max_meta_bytes": settings.max_meta_bytes})
    alias, flow_alias, meta = form_fields.alias, form_fields.flow_alias, form_fields.meta or {}
    flow_id: str | None
    if not given(form_fields, "flow_id"):
        flow_id, materialise = new_id(), False
    else:  # "" or "null": no flow
        flow_id, materialise = form_fields.flow_id, form_fields.flow_id is not None
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


@operation(summary="List images", query=ImageQuery, response=ImageOut, paged=True)
async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    query = read_query(request, ImageQuery)
    limit, offset = query.window()
    async with services.sessions() as session:
        rows, total = await list_images(
            session,
            project.project_id,
            limit,
            offset,
            include_deleted=query.include_deleted,
            source=query.source,
            flow_id=query.flow_id,
            alias=query.alias,
        )
        items = [image_json(i, project, services.settings.public_url) for i in rows]
    return page(items, total, limit, offset)


@operation(summary="Get an image by id or alias", query=FlowScoped, response=ImageOut)
async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    flow_id = read_query(request, FlowScoped).flow_id
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"], flow_id)
        return ok(image_json(image, project, services.settings.public_url))


@operation(summary="Resolve an alias", query=FlowScoped, response=ResolvedAlias)
async def resolve(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    flow_id = read_query(request, FlowScoped).flow_id
    alias = validate(AliasPath, request.path_params).alias
    if alias in TECHNICAL_ALIASES and flow_id is None:
        raise ValidationError(f"{alias} needs a flowId to resolve.", field="flowId")
    async with services.sessions() as session:
        resolved = await resolve_alias(session, project.project_id, alias, flow_id)
        if resolved is None:
            raise AliasNotFound(f"No image holds the alias {alias}.")
        return ok(
            ResolvedAlias(
                alias=alias,
                image_id=resolved.image.id,
                scope=resolved.scope,
                flow_id=resolved.flow_id,
                image=image_json(resolved.image, project, services.settings.public_url),
            )
        )


@operation(summary="Update alias, focal point, meta", body=ImageUpdate, response=ImageOut)
async def update(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_body(request, ImageUpdate)
    meta = body.meta
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"])
        renamed: tuple[str, ...] = ()
        if given(body, "alias"):
            renamed = await assign_project_alias(session, image, body.alias)
        moved = None
        if given(body, "focal_point"):
            focal = body.focal_point
            point = None if focal is None else {"x": focal.x, "y": focal.y}
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


@operation(summary="Set the project alias (null removes it)", body=ImageAlias, response=ImageOut)
async def put_alias(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    alias = (await read_body(request, ImageAlias)).alias
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"])
        renamed = await assign_project_alias(session, image, alias)
        await session.commit()
        if renamed:
            await forget_everywhere(services, project, aliases_moved(project, renamed))
        return ok(image_json(image, project, services.settings.public_url))


@operation(summary="Soft-delete an image", response=Deleted)
async def delete(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        image = await find_image(session, project.project_id, request.path_params["id"])
        event = await soft_delete_image(session, image)
        await session.commit()
    await forget_everywhere(services, project, event)
    return ok(Deleted(id=image.id))


routes = [
    Resource("/api/v1/images/upload", post=upload),
    Resource("/api/v1/images", get=list_),
    Resource("/api/v1/images/resolve/{alias}", get=resolve),
    Resource("/api/v1/images/{id}", get=get, put=update, delete=delete),
    Resource("/api/v1/images/{id}/alias", put=put_alias),
]
