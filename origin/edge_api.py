"""The origin side of the edge contract: in-process calls, and the same over HTTP."""

from __future__ import annotations

import hmac
from dataclasses import asdict

from starlette.requests import Request
from starlette.routing import Route

from cache.contract import KeyRef, LiveParams, LiveResult, ProjectRef
from cache.errors import NotFound, Unauthorized, ValidationError
from cache.index import LiveRecord
from origin import live as live_call
from origin.aliases import find_image
from origin.envelope import JSONResponse, read_json
from origin.images import image_record
from origin.keys import find_project, principal_by_hash
from origin.services import Services
from origin.signing import active_secrets


class InProcessOrigin:
    """What the edge asks, answered by direct calls (one-process mode)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.model = services.generator.model

    async def key(self, key_hash: str) -> KeyRef | None:
        """The project key hashing to `key_hash`, if it is valid (master keys serve nothing)."""
        async with self.services.sessions() as session:
            try:
                found = await principal_by_hash(session, key_hash)
            except Unauthorized:
                return None
        if found.type != "project" or found.project_id is None:
            return None
        assert found.organization_slug and found.project_slug
        return KeyRef(found.key_id, found.project_id, found.organization_slug, found.project_slug)

    async def project(self, organization_slug: str, project_slug: str) -> ProjectRef | None:
        async with self.services.sessions() as session:
            try:
                project = await find_project(session, organization_slug, project_slug)
            except NotFound:
                return None
        return ProjectRef(
            project.id,
            organization_slug,
            project_slug,
            project.require_signed_urls,
            active_secrets(project),
        )

    async def live(self, params: LiveParams) -> LiveResult:
        return await live_call.live(self.services, params)

    async def image(self, project_id: str, ref: str) -> LiveRecord:
        async with self.services.sessions() as session:
            return image_record(await find_image(session, project_id, ref))


# Over HTTP (separate edge processes): the same calls behind a service token.


def _origin(request: Request) -> InProcessOrigin:
    services: Services = request.app.state.services
    token = services.settings.service_token
    sent = request.headers.get("authorization", "").removeprefix("Bearer ")
    if not token or not hmac.compare_digest(sent.encode(), token.encode()):
        raise Unauthorized("A valid service token is required.")
    return request.app.state.edge_origin


async def info(request: Request) -> JSONResponse:
    return JSONResponse({"model": _origin(request).model})


async def key(request: Request) -> JSONResponse:
    ref = await _origin(request).key(request.path_params["hash"])
    if ref is None:
        raise NotFound("No such key.")
    return JSONResponse(asdict(ref))


async def project(request: Request) -> JSONResponse:
    ref = await _origin(request).project(request.path_params["org"], request.path_params["project"])
    if ref is None:
        raise NotFound("No such project.", code="PROJECT_NOT_FOUND")
    return JSONResponse(asdict(ref))


async def live(request: Request) -> JSONResponse:
    origin = _origin(request)
    body = await read_json(request, 64 * 1024)
    try:
        params = LiveParams(**body)
    except TypeError:
        raise ValidationError("Malformed live parameters.", field="body") from None
    result = await origin.live(params)
    return JSONResponse(
        {
            "record": asdict(result.record),
            "created": result.created,
            "rateHeaders": result.rate_headers,
            "modelMs": result.model_ms,
        }
    )


async def image(request: Request) -> JSONResponse:
    record = await _origin(request).image(
        request.path_params["project_id"], request.path_params["ref"]
    )
    return JSONResponse(asdict(record))


routes = [
    Route("/internal/info", info, methods=["GET"]),
    Route("/internal/keys/{hash}", key, methods=["GET"]),
    Route("/internal/projects/{org}/{project}", project, methods=["GET"]),
    Route("/internal/live", live, methods=["POST"]),
    Route("/internal/images/{project_id}/{ref}", image, methods=["GET"]),
]
