"""HTTP: /api/v1/live/sign and /api/v1/live/signing (signed live URLs)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from cache.errors import ValidationError
from cache.invalidation import Invalidation
from origin import signing
from origin.auth import project_of, services_of
from origin.envelope import ok, read_json, resource
from origin.projects import live_project
from origin.services import Services

log = logging.getLogger("banatie.origin")


async def _tell_edges(services: Services, project_id: str) -> None:
    """Edges cache the project's signing state: make them read it again now."""
    try:
        await services.bus.publish(Invalidation("", (), project_id=project_id))
    except Exception:
        log.warning("invalidation bus unavailable; edges see signing changes within the key TTL")


async def sign(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    url = signing.live_url_from_body(body, ctx.organization_slug, ctx.project_slug)
    expires_in = signing.expires_in(body)
    async with services.sessions() as session:
        project = await live_project(session, ctx.project_id)
        path, expires_at = signing.sign_live_url(project, url, expires_in)
    return ok({"url": services.settings.public_url + path, "path": path, "expiresAt": expires_at})


async def get_state(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    async with services.sessions() as session:
        return ok(signing.state_json(await live_project(session, ctx.project_id)))


async def put_state(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    required = body.get("requireSignedUrls")
    if not isinstance(required, bool):
        raise ValidationError("requireSignedUrls must be true or false.", field="requireSignedUrls")
    async with services.sessions() as session:
        project = await live_project(session, ctx.project_id)
        signing.set_required(project, required)
        await session.commit()
        state = signing.state_json(project)
    await _tell_edges(services, ctx.project_id)
    return ok(state)


async def rotate(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    async with services.sessions() as session:
        project = await live_project(session, ctx.project_id)
        secret = signing.rotate(project)
        await session.commit()
        state = signing.state_json(project)
    await _tell_edges(services, ctx.project_id)
    return ok({"secret": secret, **state})


routes = [
    resource("/api/v1/live/sign", post=sign),
    resource("/api/v1/live/signing", get=get_state, put=put_state),
    resource("/api/v1/live/signing/rotate", post=rotate),
]
