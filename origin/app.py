"""The origin: the management REST API as a Starlette app."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cache.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    NotReady,
    ValidationError,
    render_error,
    storage_unavailable,
)
from cache.logs import request_id as request_id_var
from cache.objects import StorageUnavailable
from cache.settings import Settings
from origin import docs
from origin.body_limit import BodyLimit
from origin.edge_api import InProcessOrigin
from origin.envelope import JSONResponse, Resource, ok, operation
from origin.openapi import openapi_document
from origin.routes import (
    flows,
    generations,
    images,
    internal,
    keys,
    live_scopes,
    live_signing,
)
from origin.routes.lab import lab_routes
from origin.schemas.responses import Health, Ready
from origin.services import Services, open_services

log = logging.getLogger("banatie.origin")


def error_response(exc: ApiError) -> Response:
    """The error as cache/errors.py renders it (the RequestId middleware adds its id)."""
    status, headers, body = render_error(exc)
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound("No such route."))
    if exc.status_code == 405:
        allowed = dict(exc.headers or {})
        return error_response(
            MethodNotAllowed("Method not allowed on this route.", headers=allowed)
        )
    err = ApiError(str(exc.detail), code="HTTP_ERROR")
    err.status = exc.status_code
    return error_response(err)


async def on_storage_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(storage_unavailable())


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(InternalError("Something went wrong on our side."))


class RequestId:
    """Echo the client's X-Request-Id or mint one; every response carries it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
                request_id = value
        if not request_id:
            request_id = uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        request_id_var.set(request_id.decode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id),
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


class RejectNul:
    """A NUL in the path or query is a 400 here, for every route: PostgreSQL can neither
    store nor compare text holding one (bodies are checked where JSON is parsed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            error = ValidationError("The URL contains a NUL character.", field="url")
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@operation(summary="Liveness", response=Health, auth="none")
async def health(request: Request) -> Response:
    return ok(Health(status="ok"))


@operation(summary="Readiness of database, storage and cache", response=Ready, auth="none")
async def ready(request: Request) -> Response:
    services: Services = request.app.state.services
    failing: dict[str, str] = {}
    try:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        failing["database"] = type(exc).__name__
    try:
        await services.store.check()
    except Exception as exc:
        failing["storage"] = str(exc)[:200]
    if services.settings.redis_url:
        try:
            await services.index.get("0" * 32)
        except Exception as exc:
            failing["cache"] = type(exc).__name__
    if failing:
        return error_response(NotReady(f"Not ready: {', '.join(failing)} failing.", failing))
    return ok(Ready(status="ready", generator=services.generator.name))


async def openapi(request: Request) -> Response:
    settings = request.app.state.services.settings
    document = openapi_document(
        request.app.routes, settings.public_url, settings.max_variant_dimension
    )
    return JSONResponse(document)


def create_origin(settings: Settings, services: Services | None = None) -> Starlette:
    """The origin app. Without `services` it opens them from settings at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services if services is not None else await open_services(settings)
        app.state.edge_origin = InProcessOrigin(app.state.services)
        try:
            yield
        finally:
            if own:
                await app.state.services.close()

    app = Starlette(
        routes=[
            Resource("/health", get=health),
            Resource("/ready", get=ready),
            Route("/openapi.json", openapi),
            *docs.routes,
            *keys.routes,
            *generations.routes,
            *flows.routes,
            *live_scopes.routes,
            *live_signing.routes,
            *images.routes,
            *internal.routes,
            *lab_routes(settings),
        ],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            StorageUnavailable: on_storage_unavailable,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
        app.state.edge_origin = InProcessOrigin(services)
    app.add_middleware(RejectNul)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RequestId)  # outermost: error answers carry the id too
    return app
