"""Process layouts: one process (edge in front of the origin), or each on its own; what
`banatie serve`, `banatie origin` and `banatie edge` serve."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from banatie.bootstrap import announce_bootstrap, bootstrap_default_project
from cache.index import open_index
from cache.invalidation import open_bus
from cache.logs import configure_logging
from cache.metrics import MetricsEndpoint
from cache.objects import open_store
from cache.settings import Settings
from edge.app import create_edge
from edge.disk_cache import open_disk_cache
from edge.origin_client import HttpOrigin
from origin.app import create_origin
from origin.edge_api import InProcessOrigin
from origin.services import open_services
from origin.upkeep import start_chores

if TYPE_CHECKING:
    from edge.protocol import FastHit

log = logging.getLogger("banatie")

# What a process layout builds: the app to serve, and how to close what it opened.
Built = tuple[ASGIApp, Callable[[], Awaitable[None]]]


class Lazy:
    """An ASGI app built at lifespan startup, inside the server's event loop."""

    def __init__(self, build: Callable[[Settings], Awaitable[Built]], settings: Settings) -> None:
        self._build = build
        self._settings = settings
        self._app: ASGIApp | None = None
        self._close: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    # Worker processes start fresh: configure their logging here too.
                    configure_logging(self._settings.log_level, self._settings.log_format)
                    try:
                        self._app, self._close = await self._build(self._settings)
                    except Exception as exc:
                        log.exception("startup failed")
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._close is not None:
                        await self._close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self._app is not None, "the app is served before lifespan startup"
        await self._app(scope, receive, send)

    @property
    def settings(self) -> Settings:
        """What the server protocol reads its limits from (edge.protocol)."""
        return self._settings

    @property
    def fast_hit(self) -> FastHit | None:
        """The built app's L1 fast path (edge.protocol), if it has one."""
        return getattr(self._app, "fast_hit", None)


async def build_one_process(settings: Settings) -> Built:
    """Edge in front, origin mounted behind it, the miss call made in-process."""
    services = await open_services(settings)
    if settings.storage_backend == "local":
        await services.store.check()
    await bootstrap_default_project(services)
    await announce_bootstrap(services)
    start_chores(services)
    origin = create_origin(settings, services)
    # On a local object store too: a second copy of what was served, but read without a
    # thread hop or an index lookup (2.7x the req/s on a long tail, docs/benchmarks.md).
    disk = open_disk_cache(settings)
    edge = create_edge(
        settings,
        InProcessOrigin(services),
        services.store,
        services.index,
        services.bus,
        origin,
        metrics=services.metrics,
        disk=disk,
    )
    await edge.start_disk()
    await services.bus.start()
    log.info(
        "banatie serving on %s (generator %s, storage %s, index %s)",
        settings.public_url,
        services.generator.name,
        settings.storage_backend,
        "redis" if settings.redis_url else "in-process",
    )

    async def close() -> None:
        if disk is not None:
            await disk.close()
        await services.close()

    return edge, close


async def build_origin(settings: Settings) -> Built:
    services = await open_services(settings)
    await announce_bootstrap(services)
    start_chores(services)
    if not settings.service_token:
        log.warning("SERVICE_TOKEN is not set: edge processes cannot reach this origin")
    # No edge in front: the origin counts its own requests and answers /metrics.
    origin = create_origin(settings, services)
    return MetricsEndpoint(origin, services.metrics, settings.metrics_token), services.close


async def build_edge(settings: Settings) -> Built:
    store = open_store(settings)
    index = open_index(settings)
    bus = open_bus(settings.redis_url)
    if not settings.redis_url:
        log.warning("REDIS_URL is not set: deletes made at the origin won't reach this edge")
    origin = HttpOrigin(settings)
    await origin.start()
    disk = open_disk_cache(settings)
    edge = create_edge(settings, origin, store, index, bus, None, disk=disk)
    await edge.start_disk()
    await bus.start()

    async def close() -> None:
        if disk is not None:
            await disk.close()
        for closer in (origin.close, bus.close, index.close, store.close):
            await closer()

    return edge, close


def one_process_app() -> Lazy:
    return Lazy(build_one_process, Settings.from_env())


def origin_app() -> Lazy:
    return Lazy(build_origin, Settings.from_env())


def edge_app() -> Lazy:
    return Lazy(build_edge, Settings.from_env())
