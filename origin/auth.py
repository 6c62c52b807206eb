"""Who is calling: the key in `X-API-Key`, resolved to a project or master principal."""

from __future__ import annotations

from starlette.requests import Request

from cache.budget import BudgetState
from cache.errors import RateLimitExceeded
from origin.images import ProjectCtx
from origin.keys import Principal, authenticate, require_master, require_project
from origin.services import Services


def services_of(request: Request) -> Services:
    return request.app.state.services


async def principal_of(request: Request) -> Principal:
    async with services_of(request).sessions() as session:
        return await authenticate(session, request.headers.get("x-api-key"))


async def project_of(request: Request) -> ProjectCtx:
    """The project a project key is bound to; 401 without a key, 403 for a master key."""
    principal = require_project(await principal_of(request))
    assert principal.project_id and principal.organization_slug and principal.project_slug
    request.state.principal = principal
    return ProjectCtx(principal.project_id, principal.organization_slug, principal.project_slug)


async def master_of(request: Request) -> Principal:
    return require_master(await principal_of(request))


async def spend_generation_budget(request: Request) -> BudgetState:
    """One unit of the key's hourly budget for a route that starts a generation."""
    services = services_of(request)
    principal: Principal = request.state.principal
    state = await services.budget.take(
        f"key:{principal.key_id}", services.settings.key_budget_per_hour
    )
    if not state.allowed:
        raise RateLimitExceeded(
            "The hourly generation budget of this key is spent.",
            retry_after=state.retry_after,
            headers=state.headers(),
        )
    return state
