"""HTTP: /api/v1/flows."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cache.errors import AliasNotFound, ValidationError
from origin.aliases import check_alias, live_image_by_id
from origin.auth import project_of, services_of
from origin.envelope import is_uuid, meta_field, ok, page, pagination, read_json, resource
from origin.flows import delete_flow, find_flow, flow_json, list_flows, newest_generation
from origin.generation_view import generation_json
from origin.generations import list_generations
from origin.images import image_json, list_images
from origin.models import Flow, utcnow
from origin.routes.generations import regenerate_generation


async def create(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes, required=False)
    flow = Flow(
        project_id=project.project_id,
        aliases={},
        meta=meta_field(body, services.settings.max_meta_bytes) or {},
    )
    async with services.sessions() as session:
        session.add(flow)
        await session.commit()
        return ok(await flow_json(session, flow), 201)


async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = pagination(request)
    async with services.sessions() as session:
        rows, total = await list_flows(session, project.project_id, limit, offset)
        items = [await flow_json(session, flow) for flow in rows]
    return page(items, total, limit, offset)


async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        return ok(await flow_json(session, flow))


async def generations(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = pagination(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        rows, total = await list_generations(
            session, flow.project_id, limit, offset, flow_id=flow.id
        )
        items = [
            await generation_json(session, g, project, services.settings.public_url) for g in rows
        ]
    return page(items, total, limit, offset)


async def images(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = pagination(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        rows, total = await list_images(session, project.project_id, limit, offset, flow_id=flow.id)
        items = [image_json(i, project, services.settings.public_url) for i in rows]
    return page(items, total, limit, offset)


async def put_aliases(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    aliases = body.get("aliases")
    if not isinstance(aliases, dict):
        raise ValidationError('aliases must be an object of {"@name": imageId}.', field="aliases")
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        merged = dict(flow.aliases or {})
        for alias, image_id in aliases.items():
            check_alias(alias, f"aliases.{alias}")
            if not is_uuid(image_id):
                raise ValidationError(
                    f"aliases.{alias} must be an image id.", field=f"aliases.{alias}"
                )
            image = await live_image_by_id(session, project.project_id, image_id)
            if image is None:
                raise ValidationError(
                    f"Image {image_id} does not exist in this project.", field=f"aliases.{alias}"
                )
            merged[alias] = image.id
        flow.aliases = merged
        flow.updated_at = utcnow()
        await session.commit()
        return ok(await flow_json(session, flow))


async def delete_alias(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    alias = request.path_params["alias"]
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        if alias not in (flow.aliases or {}):
            raise AliasNotFound(f"The flow has no alias {alias}.")
        flow.aliases = {k: v for k, v in flow.aliases.items() if k != alias}
        flow.updated_at = utcnow()
        await session.commit()
        return ok(await flow_json(session, flow))


async def delete(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        await delete_flow(session, flow)
        await session.commit()
    return ok({"id": flow.id})


async def regenerate(request: Request) -> Response:
    """A new image for the flow's newest generation, as /generations/:id/regenerate does."""
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        generation = await newest_generation(session, flow)
    return await regenerate_generation(request, project, generation.id)


routes = [
    resource("/api/v1/flows", post=create, get=list_),
    resource("/api/v1/flows/{id}", get=get, delete=delete),
    resource("/api/v1/flows/{id}/generations", get=generations),
    resource("/api/v1/flows/{id}/images", get=images),
    resource("/api/v1/flows/{id}/aliases", put=put_aliases),
    resource("/api/v1/flows/{id}/aliases/{alias}", delete=delete_alias),
    resource("/api/v1/flows/{id}/regenerate", post=regenerate),
]
