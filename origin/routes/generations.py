"""HTTP: /api/v1/generations."""

from __future__ import annotations

from sqlalchemy import select
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
    paged,
    pagination,
    query_bool,
    read_json,
    resource,
)
from origin.flows import ensure_flow
from origin.generations import (
    check_flow_id,
    check_prompt,
    check_ratio,
    check_references,
    create_generation,
    find_generation,
    generation_json,
    parse_generation,
    resolve_references,
    run_generation,
)
from origin.images import forget_everywhere, soft_delete_image
from origin.models import Generation, Image, utcnow

STATUSES = ("pending", "processing", "success", "failed")
MAX_RETRIES = 3


async def create(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    data = parse_generation(body, services.settings.max_meta_bytes)
    budget = await spend_generation_budget(request)
    generation = await create_generation(services, project, data)
    headers = budget.headers()
    if "respond-async" in request.headers.get("prefer", "").lower():
        services.spawn(_run_quietly(services, project, generation.id))
        async with services.sessions() as session:
            payload = await generation_json(
                session, generation, project, services.settings.public_url
            )
        return ok(payload, 202, headers | {"Preference-Applied": "respond-async"})
    return await _run_and_answer(services, project, generation.id, budget, 201)


async def _run_and_answer(  # type: ignore[no-untyped-def]
    services, project, generation_id: str, budget: BudgetState, status: int, regenerate=False
):
    """Run the generation; success or error, the answer carries the budget headers."""
    try:
        generation = await run_generation(services, project, generation_id, regenerate=regenerate)
    except ApiError as exc:
        exc.headers = budget.headers() | exc.headers
        raise
    async with services.sessions() as session:
        payload = await generation_json(session, generation, project, services.settings.public_url)
    return ok(payload, status, budget.headers())


async def _run_quietly(services, project, generation_id: str) -> None:  # type: ignore[no-untyped-def]
    try:
        await run_generation(services, project, generation_id)
    except ApiError:
        pass  # recorded on the row as `failed`


async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = pagination(request)
    query = select(Generation).where(Generation.project_id == project.project_id)
    status = request.query_params.get("status")
    if status is not None:
        if status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}.", field="status")
        query = query.where(Generation.status == status)
    flow_id = request.query_params.get("flowId")
    if flow_id is not None:
        if not is_uuid(flow_id):
            raise ValidationError("flowId must be a UUID.", field="flowId")
        query = query.where(Generation.flow_id == flow_id.lower())
    if not query_bool(request, "includeDeleted"):
        query = query.where(Generation.deleted_at.is_(None))
    async with services.sessions() as session:
        rows, total = await paged(
            session, query, limit, offset, Generation.created_at.desc(), Generation.id.desc()
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
        budget = await spend_generation_budget(request)
        generation.retry_count += 1
        generation.updated_at = utcnow()
        await session.commit()
    return await _run_and_answer(services, project, generation.id, budget, 200)


async def regenerate(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        generation = await find_generation(session, project.project_id, request.path_params["id"])
    budget = await spend_generation_budget(request)
    return await _run_and_answer(services, project, generation.id, budget, 200, regenerate=True)


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
