"""HTTP: /api/v1/generations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cache.budget import BudgetState
from cache.errors import ApiError, Conflict, ValidationError
from origin.auth import project_of, services_of, spend_generation_budget
from origin.envelope import (
    is_uuid,
    meta_field,
    ok,
    optional_bool,
    page,
    pagination,
    query_bool,
    read_json,
    resource,
)
from origin.flows import ensure_flow
from origin.generation_input import (
    check_flow_id,
    check_prompt,
    check_ratio,
    check_references,
    parse_generation,
)
from origin.generation_view import generation_json
from origin.generations import add_generation, find_generation, list_generations
from origin.images import ProjectCtx, forget_everywhere, soft_delete_image
from origin.models import Image, utcnow
from origin.production import run_generation
from origin.references import resolve_references
from origin.services import GenerationTicket, Services

STATUSES = ("pending", "processing", "success", "failed")
MAX_RETRIES = 3


async def create(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    data = parse_generation(body, services.settings.max_meta_bytes)
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


async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = pagination(request)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}.", field="status")
    flow_id = request.query_params.get("flowId")
    if flow_id is not None:
        if not is_uuid(flow_id):
            raise ValidationError("flowId must be a UUID.", field="flowId")
        flow_id = flow_id.lower()
    async with services.sessions() as session:
        rows, total = await list_generations(
            session,
            project.project_id,
            limit,
            offset,
            status=status,
            flow_id=flow_id,
            include_deleted=query_bool(request, "includeDeleted"),
        )
        items = [
            await generation_json(session, g, project, services.settings.public_url) for g in rows
        ]
    return page(items, total, limit, offset)


async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
        return ok(await generation_json(session, generation, project, services.settings.public_url))


async def retry(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes, required=False)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
        if generation.status != "failed":
            raise Conflict("Only a failed generation can be retried.", code="GENERATION_NOT_FAILED")
        if generation.retry_count >= MAX_RETRIES:
            raise Conflict(
                f"This generation has been retried {MAX_RETRIES} times already.",
                code="RETRY_LIMIT_EXCEEDED",
            )
        if "prompt" in body:
            generation.original_prompt = generation.prompt = check_prompt(body["prompt"])
        if "aspectRatio" in body:
            generation.aspect_ratio = check_ratio(body["aspectRatio"])
        if "autoEnhance" in body:
            generation.auto_enhance = optional_bool(body, "autoEnhance", generation.auto_enhance)
        if "referenceImages" in body:
            refs = check_references(body["referenceImages"])
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


async def update(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    meta = meta_field(body, services.settings.max_meta_bytes)
    flow_given, flow_id = check_flow_id(body)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
        if meta is not None:
            generation.meta = meta
        if flow_given:
            if flow_id is not None:
                await ensure_flow(session, project.project_id, flow_id)
            generation.flow_id = flow_id
        generation.updated_at = utcnow()
        await session.commit()
        return ok(await generation_json(session, generation, project, services.settings.public_url))


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
    return ok({"id": generation.id})


routes = [
    resource("/api/v1/generations", post=create, get=list_),
    resource("/api/v1/generations/{id}", get=get, put=update, delete=delete),
    resource("/api/v1/generations/{id}/retry", post=retry),
    resource("/api/v1/generations/{id}/regenerate", post=regenerate),
]
