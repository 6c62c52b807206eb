"""HTTP: /api/v1/live/sign and /api/v1/live/signing (signed live URLs)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from cache.invalidation import Invalidation
from origin import signing
from origin.auth import project_of, services_of
from origin.envelope import Resource, ok, operation
from origin.projects import live_project
from origin.schemas.requests import SignBody, SigningBody
from origin.schemas.responses import RotatedSecret, SignedUrl, SigningState
from origin.schemas.validation import read_body
from origin.services import Services

log = logging.getLogger("banatie.origin")


async def _tell_edges(services: Services, project_id: str) -> None:
    """Edges cache the project's signing state: make them read it again now."""
    try:
        await services.bus.publish(Invalidation("", (), project_id=project_id))
    except Exception:
        log.warning("invalidation bus unavailable; edges see signing changes within the key TTL")


@operation(summary="Sign a live CDN URL", body=SignBody, response=SignedUrl)
async def sign(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    body = await read_body(request, SignBody)
    url = signing.live_url_from_body(body, ctx.organization_slug, ctx.project_slug)
    async with services.sessions() as session:
        project = await live_project(session, ctx.project_id)
        path, expires_at = signing.sign_live_url(project, url, body.expires_in_seconds)
    public = services.settings.public_url + path
    return ok(SignedUrl(url=public, path=path, expires_at=expires_at))


@operation(summary="Signed-URL settings (no secrets)", response=SigningState)
async def get_state(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    async with services.sessions() as session:
        return ok(signing.state_json(await live_project(session, ctx.project_id)))


@operation(summary="Require signed live URLs", body=SigningBody, response=SigningState)
async def put_state(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    required = (await read_body(request, SigningBody)).require_signed_urls
    async with services.sessions() as session:
        project = await live_project(session, ctx.project_id)
        signing.set_required(project, required)
        await session.commit()
        state = signing.state_json(project)
    await _tell_edges(services, ctx.project_id)
    return ok(state)


@operation(
    summary="New signing secret (shown once); the current one stays valid as the previous",
    response=RotatedSecret,
)
async def rotate(request: Request) -> Response:
    services = services_of(request)
    ctx = await project_of(request)
    async with services.sessions() as session:
        project = await live_project(session, ctx.project_id)
        secret = signing.rotate(project)
        await session.commit()
        state = signing.state_json(project)
    await _tell_edges(services, ctx.project_id)
    return ok(
        RotatedSecret(
            secret=secret, require_signed_urls=state.require_signed_urls, secrets=state.secrets
        )
    )


routes = [
    Resource("/api/v1/live/sign", post=sign),
    Resource("/api/v1/live/signing", get=get_state, put=put_state),
    Resource("/api/v1/live/signing/rotate", post=rotate),
]
