"""HTTP: /api/v1/live/scopes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cache.errors import (
    ApiError,
    ScopeInvalidFormat,
    ValidationError,
)
from cache.live_key import SCOPE_PATTERN
from origin.auth import project_of, services_of, spend_generation_budget
from origin.envelope import (
    iso,
    meta_field,
    ok,
    optional_bool,
    optional_int,
    page,
    pagination,
    read_json,
    resource,
)
from origin.generation_view import generation_json
from origin.live_keys import keys_to_regenerate, regenerate_key
from origin.models import LiveScope, utcnow
from origin.scopes import add_scope, find_scope, list_scopes


def scope_json(scope: LiveScope) -> dict[str, Any]:
    return {
        "id": scope.id,
        "slug": scope.slug,
        "allowNewGenerations": scope.allow_new_generations,
        "newGenerationsLimit": scope.new_generations_limit,
        "currentGenerations": scope.current_generations,
        "lastGeneratedAt": iso(scope.last_generated_at),
        "meta": scope.meta or {},
        "createdAt": iso(scope.created_at),
        "updatedAt": iso(scope.updated_at),
    }


async def create(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    slug = body.get("slug")
    if not isinstance(slug, str) or not SCOPE_PATTERN.fullmatch(slug):
        raise ScopeInvalidFormat("slug must match [A-Za-z0-9_-]{1,64}.", field="slug")
    scope = LiveScope(
        project_id=project.project_id,
        slug=slug,
        allow_new_generations=optional_bool(body, "allowNewGenerations", True),
        new_generations_limit=optional_int(
            body, "newGenerationsLimit", services.settings.default_scope_limit, 0, 1_000_000
        ),
        meta=meta_field(body, services.settings.max_meta_bytes) or {},
    )
    async with services.sessions() as session:
        await add_scope(session, scope)
        return ok(scope_json(scope), 201)


async def list_(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    limit, offset = pagination(request)
    async with services.sessions() as session:
        rows, total = await list_scopes(session, project.project_id, limit, offset)
        return page([scope_json(s) for s in rows], total, limit, offset)


async def get(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        return ok(
            scope_json(await find_scope(session, project.project_id, request.path_params["slug"]))
        )


async def update(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    meta = meta_field(body, services.settings.max_meta_bytes)
    async with services.sessions() as session:
        scope = await find_scope(session, project.project_id, request.path_params["slug"])
        if "allowNewGenerations" in body:
            scope.allow_new_generations = optional_bool(
                body, "allowNewGenerations", scope.allow_new_generations
            )
        if "newGenerationsLimit" in body:
            scope.new_generations_limit = optional_int(
                body, "newGenerationsLimit", scope.new_generations_limit, 0, 1_000_000
            )
        if meta is not None:
            scope.meta = meta
        scope.updated_at = utcnow()
        await session.commit()
        return ok(scope_json(scope))


async def delete(request: Request) -> Response:
    services = services_of(request)
    project = await project_of(request)
    async with services.sessions() as session:
        scope = await find_scope(session, project.project_id, request.path_params["slug"])
        await session.delete(scope)
        await session.commit()
    return ok({"id": scope.id, "slug": scope.slug})


async def regenerate(request: Request) -> Response:
    """A new image for each live key of the scope, or for the one serving `imageId`: one unit
    of the key's budget per image, spent up front, all or none; they run one after another."""
    services = services_of(request)
    project = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes, required=False)
    image_id = body.get("imageId")
    if image_id is not None and not isinstance(image_id, str):
        raise ValidationError("imageId must be an image id.", field="imageId")
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
            {
                "previousImageId": done.previous_image_id,
                "imageId": done.generation.output_image_id,
                "generation": generation,
            }
        )
    return ok({"slug": slug, "regenerated": regenerated}, 200, budget.headers())


routes = [
    resource("/api/v1/live/scopes", post=create, get=list_),
    resource("/api/v1/live/scopes/{slug}", get=get, put=update, delete=delete),
    resource("/api/v1/live/scopes/{slug}/regenerate", post=regenerate),
]
