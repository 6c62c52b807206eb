"""HTTP: /api/v1/flows."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cache.errors import AliasNotFound, ValidationError
from origin.aliases import live_image_by_id
from origin.auth import project_of, services_of
from origin.envelope import Resource, ok, operation, page
from origin.flows import delete_flow, find_flow, flow_json, list_flows, newest_generation
from origin.generation_view import generation_json
from origin.generations import list_generations
from origin.images import image_json, list_images
from origin.models import Flow, utcnow
from origin.routes.generations import regenerate_generation
from origin.schemas.requests import FlowAliases, FlowBody, PageQuery
from origin.schemas.responses import Deleted, FlowOut, GenerationOut, ImageOut
from origin.schemas.validation import read_body, read_query


@operation(
    summary="Create a flow",
    body=FlowBody,
    body_required=False,
    response=FlowOut,
    status=201,
)
async def create(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_body(request, FlowBody, required=False)
    flow = Flow(project_id=project.project_id, aliases={}, meta=body.meta or {})
    async with services.sessions() as session:
        session.add(flow)
        await session.commit()
        return ok(await flow_json(session, flow), 201)


@operation(summary="List flows", query=PageQuery, response=FlowOut, paged=True)
async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = read_query(request, PageQuery).window()
    async with services.sessions() as session:
        rows, total = await list_flows(session, project.project_id, limit, offset)
        items = [await flow_json(session, flow) for flow in rows]
    return page(items, total, limit, offset)


@operation(summary="Get a flow", response=FlowOut)
async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        return ok(await flow_json(session, flow))


@operation(summary="A flow's generations", query=PageQuery, response=GenerationOut, paged=True)
async def generations(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = read_query(request, PageQuery).window()
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        rows, total = await list_generations(
            session, flow.project_id, limit, offset, flow_id=flow.id
        )
        items = [
            await generation_json(session, g, project, services.settings.public_url) for g in rows
        ]
    return page(items, total, limit, offset)


@operation(summary="A flow's images", query=PageQuery, response=ImageOut, paged=True)
async def images(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = read_query(request, PageQuery).window()
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        rows, total = await list_images(session, project.project_id, limit, offset, flow_id=flow.id)
        items = [image_json(i, project, services.settings.public_url) for i in rows]
    return page(items, total, limit, offset)


@operation(summary="Merge flow aliases", body=FlowAliases, response=FlowOut)
async def put_aliases(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    aliases = (await read_body(request, FlowAliases)).aliases
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        merged = dict(flow.aliases or {})
        for alias, image_id in aliases.items():
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


@operation(summary="Remove a flow alias", response=FlowOut)
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


@operation(summary="Delete a flow", response=Deleted)
async def delete(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        await delete_flow(session, flow)
        await session.commit()
    return ok(Deleted(id=flow.id))


@operation(summary="Regenerate the flow's newest generation as a new image", response=GenerationOut)
async def regenerate(request: Request) -> Response:
    """A new image for the flow's newest generation, as /generations/:id/regenerate does."""
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        flow = await find_flow(session, project.project_id, request.path_params["id"])
        generation = await newest_generation(session, flow)
    return await regenerate_generation(request, project, generation.id)


routes = [
    Resource("/api/v1/flows", post=create, get=list_),
    Resource("/api/v1/flows/{id}", get=get, delete=delete),
    Resource("/api/v1/flows/{id}/generations", get=generations),
    Resource("/api/v1/flows/{id}/images", get=images),
    Resource("/api/v1/flows/{id}/aliases", put=put_aliases),
    Resource("/api/v1/flows/{id}/aliases/{alias}", delete=delete_alias),
    Resource("/api/v1/flows/{id}/regenerate", post=regenerate),
]
