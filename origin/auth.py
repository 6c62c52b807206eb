"""Who is calling: the key in `X-API-Key`, resolved to a project or master principal."""

from __future__ import annotations

from starlette.requests import Request

from cache.budget import BudgetState
from origin.budgets import spend_key_budget
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


async def spend_generation_budget(request: Request, cost: int = 1) -> BudgetState:
    """`cost` units (one per generation it starts) of the calling key's budget."""
    principal: Principal = request.state.principal
    return await spend_key_budget(services_of(request), principal.key_id, cost)
