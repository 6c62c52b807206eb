"""HTTP: /api/v1/generations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cache.budget import BudgetState
from cache.errors import ApiError, Conflict
from origin.auth import project_of, services_of, spend_generation_budget
from origin.envelope import Resource, ok, operation, page
from origin.flows import ensure_flow
from origin.generation_view import generation_json
from origin.generations import add_generation, find_generation, list_generations
from origin.images import ProjectCtx, forget_everywhere, soft_delete_image
from origin.models import Image, utcnow
from origin.production import run_generation
from origin.references import resolve_references
from origin.schemas.requests import (
    GenerationBody,
    GenerationQuery,
    GenerationUpdate,
    RetryBody,
    given,
)
from origin.schemas.responses import Deleted, GenerationOut
from origin.schemas.validation import read_body, read_query
from origin.services import GenerationTicket, Services

MAX_RETRIES = 3


@operation(
    summary="Create a generation (Prefer: respond-async answers 202 at once)",
    body=GenerationBody,
    response=GenerationOut,
    status=201,
    also=(202,),
)
async def create(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    data = (await read_body(request, GenerationBody)).input()
    async with services.sessions() as session:
        # One transaction: a bad reference (400), a full queue (503) or a spent budget (429)
        # leaves no row behind.
        generation = await add_generation(session, project, data)
        ticket, budget = await _admit(request)
        try:
            await session.commit()
        except BaseException:
            ticket.release()
            raise
    headers = budget.headers()
    if "respond-async" in request.headers.get("prefer", "").lower():
        services.spawn(_run_quietly(services, project, generation.id, ticket))
        async with services.sessions() as session:
            payload = await generation_json(
                session, generation, project, services.settings.public_url
            )
        return ok(payload, 202, headers | {"Preference-Applied": "respond-async"})
    return await _run_and_answer(services, project, generation.id, ticket, budget, 201)


async def _admit(request: Request) -> tuple[GenerationTicket, BudgetState]:
    """A place among the generation slots, then one unit of the key's budget: a full queue
    (503) spends nothing, and a spent budget (429) gives the place back."""
    ticket = services_of(request).slots.reserve()
    try:
        return ticket, await spend_generation_budget(request)
    except BaseException:
        ticket.release()
        raise


async def _run_and_answer(
    services: Services,
    project: ProjectCtx,
    generation_id: str,
    ticket: GenerationTicket,
    budget: BudgetState,
    status: int,
    regenerate: bool = False,
) -> Response:
    """Run the generation; success or error, the answer carries the budget headers."""
    try:
        generation = await run_generation(
            services, project, generation_id, ticket, regenerate=regenerate
        )
    except ApiError as exc:
        exc.headers = budget.headers() | exc.headers
        raise
    async with services.sessions() as session:
        payload = await generation_json(session, generation, project, services.settings.public_url)
    return ok(payload, status, budget.headers())


async def _run_quietly(
    services: Services, project: ProjectCtx, generation_id: str, ticket: GenerationTicket
) -> None:
    try:
        await run_generation(services, project, generation_id, ticket)
    except ApiError:
        pass  # recorded on the row as `failed`


@operation(summary="List generations", query=GenerationQuery, response=GenerationOut, paged=True)
async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    query = read_query(request, GenerationQuery)
    limit, offset = query.window()
    async with services.sessions() as session:
        rows, total = await list_generations(
            session,
            project.project_id,
            limit,
            offset,
            status=query.status,
            flow_id=query.flow_id,
            include_deleted=query.include_deleted,
        )
        items = [
            await generation_json(session, g, project, services.settings.public_url) for g in rows
        ]
    return page(items, total, limit, offset)


@operation(summary="Get a generation", response=GenerationOut)
async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
        return ok(await generation_json(session, generation, project, services.settings.public_url))


@operation(
    summary="Retry a failed generation, changing what the body names",
    body=RetryBody,
    body_required=False,
    response=GenerationOut,
)
async def retry(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_body(request, RetryBody, required=False)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
        if generation.status != "failed":
            raise Conflict("Only a failed generation can be retried.", code="GENERATION_NOT_FAILED")
        if generation.retry_count >= MAX_RETRIES:
            raise Conflict(
                f"This generation has been retried {MAX_RETRIES} times already.",
                code="RETRY_LIMIT_EXCEEDED",
            )
        if body.prompt is not None:
            generation.original_prompt = generation.prompt = body.prompt
        if given(body, "aspect_ratio"):
            generation.aspect_ratio = body.aspect_ratio or "1:1"
        if body.auto_enhance is not None:
            generation.auto_enhance = body.auto_enhance
        if given(body, "reference_images"):
            refs = list(body.reference_images or [])
            generation.reference_inputs = refs
            generation.referenced_images = await resolve_references(
                session, project.project_id, refs, generation.original_prompt, generation.flow_id
            )
        ticket, budget = await _admit(request)
        generation.status = "pending"  # while queued; and a second retry is refused (409)
        generation.retry_count += 1
        generation.updated_at = utcnow()
        try:
            await session.commit()
        except BaseException:
            ticket.release()
            raise
    return await _run_and_answer(services, project, generation.id, ticket, budget, 200)


@operation(summary="Regenerate as a new image (its aliases move to it)", response=GenerationOut)
async def regenerate(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
    return await regenerate_generation(request, project, generation.id)


async def regenerate_generation(
    request: Request, project: ProjectCtx, generation_id: str
) -> Response:
    """A new image for the generation's stored parameters (its aliases move to it): one unit
    of the key's budget and a place among the generation slots."""
    ticket, budget = await _admit(request)
    return await _run_and_answer(
        services_of(request), project, generation_id, ticket, budget, 200, regenerate=True
    )


@operation(summary="Edit meta and flowId", body=GenerationUpdate, response=GenerationOut)
async def update(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_body(request, GenerationUpdate)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
        if body.meta is not None:
            generation.meta = body.meta
        if given(body, "flow_id"):
            if body.flow_id is not None:
                await ensure_flow(session, project.project_id, body.flow_id)
            generation.flow_id = body.flow_id
        generation.updated_at = utcnow()
        await session.commit()
        return ok(await generation_json(session, generation, project, services.settings.public_url))


@operation(summary="Soft-delete a generation (and its image)", response=Deleted)
async def delete(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    event = None
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
        generation.deleted_at = generation.updated_at = utcnow()
        if generation.output_image_id:
            image = await session.get(Image, generation.output_image_id)
            if image is not None and image.deleted_at is None:
                event = await soft_delete_image(session, image)
        await session.commit()
    if event is not None:
        await forget_everywhere(services, project, event)
    return ok(Deleted(id=generation.id))


routes = [
    Resource("/api/v1/generations", post=create, get=list_),
    Resource("/api/v1/generations/{id}", get=get, put=update, delete=delete),
    Resource("/api/v1/generations/{id}/retry", post=retry),
    Resource("/api/v1/generations/{id}/regenerate", post=regenerate),
]
