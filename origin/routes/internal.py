"""HTTP: /internal/* — the edge contract (origin/edge_api.py) for separate edge processes,
behind the service token."""

from __future__ import annotations

import hmac
from dataclasses import asdict

from starlette.requests import Request
from starlette.routing import Route

from cache.contract import LiveParams
from cache.errors import NotFound, Unauthorized, ValidationError
from origin.edge_api import InProcessOrigin
from origin.envelope import JSONResponse, read_json
from origin.services import Services


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
