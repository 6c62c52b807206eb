"""The origin's parts, built once from settings and handed to routes explicitly."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cache.budget import Budget, MemoryBudget, RedisBudget
from cache.errors import UpstreamUnavailable
from cache.index import Index, open_index
from cache.invalidation import InvalidationBus, LocalBus
from cache.metrics import Metrics
from cache.objects import ObjectStore, open_store
from cache.settings import Settings
from origin.db import make_engine, migrate, sessions
from origin.generators import Generator, open_generator

log = logging.getLogger("banatie.origin")


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore
    generator: Generator
    index: Index
    bus: InvalidationBus
    budget: Budget
    background: set[asyncio.Task[object]] = field(default_factory=set)
    generations_in_flight: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    chores: list[asyncio.Task[None]] = field(default_factory=list)  # cancelled at close

    def __post_init__(self) -> None:
        self.metrics.read("origin_in_flight", lambda: self.generations_in_flight)

    def generation_slot(self) -> _Slot:
        """Bound concurrent generations; over the cap → 503, never an unbounded queue."""
        return _Slot(self)

    def spawn(self, coro) -> asyncio.Task[object]:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def start_chores(self) -> None:
        """Periodic upkeep of a serving origin: interrupted generations are marked failed."""
        from origin.generations import sweep_interrupted

        self.chores.append(asyncio.ensure_future(sweep_interrupted(self)))

    async def close(self) -> None:
        """Let background generations finish (up to the generation timeout), then disconnect."""
        for chore in self.chores:
            chore.cancel()
        if self.background:
            log.info("waiting for %d background generations", len(self.background))
            await asyncio.wait(self.background, timeout=self.settings.generation_timeout_s)
        for closer in (self.generator.close, self.index.close, self.bus.close, self.store.close):
            try:
                await closer()
            except Exception:  # closing is best effort
                log.exception("error while closing")
        await self.engine.dispose()


class _Slot:
    def __init__(self, services: Services) -> None:
        self._services = services

    async def __aenter__(self) -> None:
        cap = self._services.settings.max_concurrent_generations
        if self._services.generations_in_flight >= cap:
            raise UpstreamUnavailable(
                f"{cap} generations are already running; try again shortly.", retry_after=2
            )
        self._services.generations_in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        self._services.generations_in_flight -= 1


async def open_services(
    settings: Settings,
    *,
    index: Index | None = None,
    bus: InvalidationBus | None = None,
    run_migrations: bool = True,
) -> Services:
    """Connect everything the settings name and bring the schema up to date."""
    engine = make_engine(settings.resolved_database_url)
    if run_migrations:
        await migrate(engine)
    store = open_store(settings)
    budget: Budget = MemoryBudget()
    if settings.redis_url:
        from cache.index.redis import connect

        budget = RedisBudget(connect(settings.redis_url))
        if bus is None:
            from cache.invalidation import RedisBus

            bus = RedisBus.from_url(settings.redis_url)
    generator = open_generator(settings)
    if generator.name == "offline":
        log.warning("no GEMINI_API_KEY set: using the offline generator (drawn placeholder images)")
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions(engine),
        store=store,
        generator=generator,
        index=index if index is not None else open_index(settings),
        bus=bus if bus is not None else LocalBus(),
        budget=budget,
    )
