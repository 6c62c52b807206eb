"""HTTP: /api/v1/live/scopes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cache.errors import ApiError, ValidationError
from origin.auth import project_of, services_of, spend_generation_budget
from origin.envelope import Resource, iso, ok, operation, page
from origin.generation_view import generation_json
from origin.live_keys import keys_to_regenerate, regenerate_key
from origin.models import LiveScope, utcnow
from origin.schemas.requests import PageQuery, ScopeBody, ScopeRegenerate, ScopeUpdate
from origin.schemas.responses import Regenerated, ScopeDeleted, ScopeOut, ScopeRegenerated
from origin.schemas.validation import read_body, read_query
from origin.scopes import add_scope, find_scope, list_scopes


def scope_json(scope: LiveScope) -> ScopeOut:
    return ScopeOut(
        id=scope.id,
        slug=scope.slug,
        allow_new_generations=scope.allow_new_generations,
        new_generations_limit=scope.new_generations_limit,
        current_generations=scope.current_generations,
        last_generated_at=iso(scope.last_generated_at),
        meta=scope.meta or {},
        created_at=iso(scope.created_at),
        updated_at=iso(scope.updated_at),
    )


@operation(summary="Create a live scope", body=ScopeBody, response=ScopeOut, status=201)
async def create(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_body(request, ScopeBody)
    limit = body.new_generations_limit
    scope = LiveScope(
        project_id=project.project_id,
        slug=body.slug,
        allow_new_generations=body.allow_new_generations is not False,
        new_generations_limit=services.settings.default_scope_limit if limit is None else limit,
        meta=body.meta or {},
    )
    async with services.sessions() as session:
        await add_scope(session, scope)
        return ok(scope_json(scope), 201)


@operation(summary="List live scopes", query=PageQuery, response=ScopeOut, paged=True)
async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = read_query(request, PageQuery).window()
    async with services.sessions() as session:
        rows, total = await list_scopes(session, project.project_id, limit, offset)
        return page([scope_json(s) for s in rows], total, limit, offset)


@operation(summary="Get a live scope", response=ScopeOut)
async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        return ok(
            scope_json(await find_scope(session, project.project_id, request.path_params["slug"]))
        )


@operation(summary="Update a live scope", body=ScopeUpdate, response=ScopeOut)
async def update(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_body(request, ScopeUpdate)
    async with services.sessions() as session:
        scope = await find_scope(session, project.project_id, request.path_params["slug"])
        if body.allow_new_generations is not None:
            scope.allow_new_generations = body.allow_new_generations
        if body.new_generations_limit is not None:
            scope.new_generations_limit = body.new_generations_limit
        if body.meta is not None:
            scope.meta = body.meta
        scope.updated_at = utcnow()
        await session.commit()
        return ok(scope_json(scope))


@operation(summary="Delete a live scope", response=ScopeDeleted)
async def delete(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        scope = await find_scope(session, project.project_id, request.path_params["slug"])
        await session.delete(scope)
        await session.commit()
    return ok(ScopeDeleted(id=scope.id, slug=scope.slug))


@operation(
    summary="A new image for each live key of the scope, or for the one serving imageId",
    body=ScopeRegenerate,
    body_required=False,
    response=ScopeRegenerated,
)
async def regenerate(request: Request) -> Response:
    """A new image for each live key of the scope, or for the one serving `imageId`: one unit
    of the key's budget per image, spent up front, all or none; they run one after another."""
    services = services_of(request)
    project = await project_of(request)
    image_id = (await read_body(request, ScopeRegenerate, required=False)).image_id
    slug = request.path_params["slug"]
    async with services.sessions() as session:
        await find_scope(session, project.project_id, slug)
        keys = await keys_to_regenerate(session, project.project_id, slug, image_id)
    burst = services.settings.key_rate.burst
    if 0 < burst < len(keys):
        raise ValidationError(
            f"The scope has {len(keys)} live images; one call regenerates at most {burst} "
            "(this key's burst): pass imageId to regenerate them one at a time.",
            field="imageId",
        )
    budget = await spend_generation_budget(request, cost=len(keys))
    regenerated = []
    for key in keys:
        try:
            done = await regenerate_key(services, project, key)
        except ApiError as exc:  # those before it are done and published
            exc.headers = budget.headers() | exc.headers
            raise
        async with services.sessions() as session:
            generation = await generation_json(
                session, done.generation, project, services.settings.public_url
            )
        regenerated.append(
            Regenerated(
                previous_image_id=done.previous_image_id,
                image_id=done.generation.output_image_id,
                generation=generation,
            )
        )
    return ok(ScopeRegenerated(slug=slug, regenerated=regenerated), 200, budget.headers())


routes = [
    Resource("/api/v1/live/scopes", post=create, get=list_),
    Resource("/api/v1/live/scopes/{slug}", get=get, put=update, delete=delete),
    Resource("/api/v1/live/scopes/{slug}/regenerate", post=regenerate),
]
