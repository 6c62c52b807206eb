"""Periodic upkeep of a serving origin: interrupted generations are marked failed, and live
claims abandoned by a dead process give their key and scope count back."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import delete, select, update

from origin.db import rowcount
from origin.generations import INTERRUPTED, stale_after_s
from origin.live import abandon_claim
from origin.models import Generation, LiveEntry, utcnow
from origin.services import Services

log = logging.getLogger("banatie.origin")


def start_chores(services: Services) -> None:
    """Start the sweeps as chores of `services` (cancelled when it closes)."""
    services.chores.append(asyncio.ensure_future(sweep_interrupted(services)))
    services.chores.append(asyncio.ensure_future(sweep_abandoned_claims(services)))


async def fail_interrupted(services: Services) -> int:
    """Mark generations whose process died mid-run (SIGKILL, power loss) `failed`, so they do
    not stay `processing` for ever; they can be retried like any failure."""
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_after_s(services.settings))
    async with services.sessions() as session:
        result = await session.execute(
            update(Generation)
            .where(
                Generation.status.in_(("pending", "processing")),
                Generation.updated_at < cutoff,
            )
            .values(status="failed", error_message=INTERRUPTED, updated_at=now)
        )
        await session.commit()
    failed = rowcount(result)
    if failed:
        log.warning("%d interrupted generation(s) marked failed", failed)
    return failed


async def sweep_interrupted(services: Services) -> None:
    """`fail_interrupted` at start and then every half of the stale time (at most a minute)."""
    every = min(60.0, stale_after_s(services.settings) / 2)
    while True:
        try:
            await fail_interrupted(services)
        except Exception:
            log.warning("could not sweep interrupted generations", exc_info=True)
        await asyncio.sleep(every)


async def release_abandoned_claims(services: Services) -> int:
    """Claims left `pending` by a process that died, for keys nobody asked for again: free
    the key, fail the generation, give the scope count back."""
    cutoff = utcnow() - timedelta(milliseconds=services.settings.lock_lease_ms * 2)
    released = 0
    async with services.sessions() as session:
        stale = (
            await session.execute(
                select(LiveEntry).where(
                    LiveEntry.status == "pending", LiveEntry.updated_at <= cutoff
                )
            )
        ).scalars()
        for entry in list(stale):
            abandoned = (entry.project_id, entry.scope, entry.generation_id)
            gone = await session.execute(
                delete(LiveEntry).where(
                    LiveEntry.id == entry.id,
                    LiveEntry.status == "pending",
                    LiveEntry.updated_at == entry.updated_at,  # not renewed or taken meanwhile
                )
            )
            if rowcount(gone) == 1:
                await abandon_claim(session, *abandoned)
                released += 1
        await session.commit()
    if released:
        log.warning("%d abandoned live claim(s) released", released)
    return released


async def sweep_abandoned_claims(services: Services) -> None:
    """`release_abandoned_claims` at start and then every two leases."""
    every = services.settings.lock_lease_ms * 2 / 1000
    while True:
        try:
            await release_abandoned_claims(services)
        except Exception:
            log.warning("could not sweep abandoned live claims", exc_info=True)
        await asyncio.sleep(every)
