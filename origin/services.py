"""The origin's parts, built once from settings and handed to routes explicitly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cache.budget import Budget, open_budget
from cache.errors import UpstreamUnavailable
from cache.index import Index, open_index
from cache.invalidation import InvalidationBus, open_bus
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
    slots: GenerationSlots = field(init=False)
    metrics: Metrics = field(default_factory=Metrics)
    chores: list[asyncio.Task[None]] = field(default_factory=list)  # cancelled at close

    def __post_init__(self) -> None:
        self.slots = GenerationSlots(
            self.settings.max_concurrent_generations, self.settings.generation_queue
        )
        self.metrics.read("origin_in_flight", lambda: self.slots.running)

    def spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

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


class GenerationSlots:
    """At most `cap` generations run at once and `queue` more wait their turn (FIFO); beyond
    that a generation is refused with 503 before anything is stored or spent."""

    def __init__(self, cap: int, queue: int) -> None:
        self.cap = cap
        self.queue = queue
        self.admitted = 0  # running, waiting, or reserved and about to wait
        self.running = 0
        self._turns = asyncio.Semaphore(cap)

    def reserve(self, *, wait: bool = True) -> GenerationTicket:
        """A place for one generation, or UpstreamUnavailable. `wait=False` (a live miss, which
        holds a claim while it runs) asks for a free slot now, behind nobody in the queue."""
        room = self.cap + (self.queue if wait else 0)
        if self.admitted >= room:
            waiting = max(0, self.admitted - self.cap)
            raise UpstreamUnavailable(
                f"{self.cap} generations are running and {waiting} waiting; try again shortly.",
                retry_after=2,
            )
        self.admitted += 1
        return GenerationTicket(self)


class GenerationTicket:
    """One admitted generation: `await start()` waits for a slot; `release()` (idempotent)
    frees the slot or the place in the queue."""

    def __init__(self, slots: GenerationSlots) -> None:
        self._slots = slots
        self._running = False
        self._released = False

    async def start(self, within: float | None = None) -> bool:
        """Wait for a slot, at most `within` seconds: True once this generation may run."""
        if not self._running:
            try:
                await asyncio.wait_for(self._slots._turns.acquire(), within)
            except TimeoutError:
                return False
            self._running = True
            self._slots.running += 1
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._slots.admitted -= 1
        if self._running:
            self._slots.running -= 1
            self._slots._turns.release()


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
        bus=bus if bus is not None else open_bus(settings.redis_url),
        budget=open_budget(settings.redis_url),
    )
