"""The live miss call: the image for a cache key, generated at most once per (project, key)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cache.budget import BudgetState
from cache.contract import LiveParams, LiveResult
from cache.errors import (
    ApiError,
    GatewayTimeout,
    GenerationFailed,
)
from cache.index import LiveRecord
from cache.live_key import LiveKey, live_key, manifest_key
from origin.budgets import spend_ip_budget, spend_key_budget
from origin.db import rowcount
from origin.generation_input import GenerationInput
from origin.generations import INTERRUPTED, add_generation
from origin.images import ProjectCtx, image_record
from origin.models import Generation, Image, LiveEntry, new_id, utcnow
from origin.production import AlsoInTransaction, produce
from origin.schemas.requests import LiveInput
from origin.schemas.validation import validate
from origin.scopes import count_scope, uncount_scope
from origin.services import Services

log = logging.getLogger("banatie.origin")

POLL_S = 0.1


async def live(services: Services, params: LiveParams) -> LiveResult:
    """Existing image for the key, or claim the key and generate it (scope, budgets checked)."""
    checked = validate(
        LiveInput,
        {
            "scope": params.scope or None,  # "": /api/v1/live
            "prompt": params.prompt,
            "aspectRatio": params.aspect_ratio,
            "template": params.template,
        },
    )
    key = live_key(
        params.project_id,
        params.scope,
        checked.prompt,
        checked.aspect_ratio or "1:1",
        params.auto_enhance,
        checked.template or "general",
        services.generator.model,
    )
    project = ProjectCtx(params.project_id, params.organization_slug, params.project_slug)
    deadline = asyncio.get_running_loop().time() + services.settings.generation_timeout_s * 2
    generation_id = new_id()  # named in the claim, so one insert claims and links it
    first = True
    async with contextlib.AsyncExitStack() as held:  # the generation slot, once claimed
        while True:
            async with services.sessions() as session:
                # A miss at the edge is most often a new key: try to claim it before reading.
                entry, record = (None, None) if first else await _existing(session, key)
                if record is not None:
                    await _publish(services, project, key, record)
                    return LiveResult(record, False, {})
                if await _claim(services, session, key, entry, generation_id):
                    generation, budget = await _start(
                        services, session, project, key, params, held, generation_id
                    )
                    break
            if first:  # the key has a row already: read it at once
                first = False
                continue
            if asyncio.get_running_loop().time() > deadline:
                raise GatewayTimeout("The image for this key is still being generated elsewhere.")
            await asyncio.sleep(POLL_S)  # another caller holds the key: wait for its outcome
        heartbeat = asyncio.ensure_future(_heartbeat(services, key))
        try:
            produced = await produce(services, project, generation, also=_ready(key))
        except BaseException as exc:
            attempted = isinstance(exc, ApiError) and bool((exc.details or {}).get("generationId"))
            await _release(services, key, generation_id, failed=attempted)
            raise
        finally:
            heartbeat.cancel()
    record = image_record(produced.image, key.canonical)
    await _publish(services, project, key, record)
    log.debug(
        "live key %s generated: image %s, %d bytes, model %.0f ms",
        key.digest,
        record.image_id,
        record.size,
        produced.model_ms,
    )
    return LiveResult(
        record,
        True,
        budget.headers() if budget else {},
        body=produced.data,
        model_ms=produced.model_ms,
    )


async def _start(
    services: Services,
    session: AsyncSession,
    project: ProjectCtx,
    key: LiveKey,
    params: LiveParams,
    held: contextlib.AsyncExitStack,
    generation_id: str,
) -> tuple[Generation, BudgetState | None]:
    """In the claim's transaction: take a generation slot (into `held`), count the scope,
    take the budget and add the generation the claim names (already `processing`); one
    commit. A refusal rolls the whole transaction back, the claim included, so the key
    stays free and nothing is counted or spent."""
    try:
        # A live miss holds its claim while it runs, so it never queues: a free slot or 503.
        ticket = services.slots.reserve(wait=False)
        held.callback(ticket.release)
        await ticket.start()
        if params.scope:
            await count_scope(
                session, params.project_id, params.scope, services.settings.default_scope_limit
            )
        budget = await _admit(services, params)
        generation = await add_generation(
            session,
            project,
            GenerationInput(
                prompt=key.prompt,
                aspect_ratio=key.aspect_ratio,
                auto_enhance=key.auto_enhance,
                template=key.template,
                reference_inputs=[],
                flow=None,
                flow_given=True,
                alias=None,
                flow_alias=None,
                meta={},
            ),
            status="processing",
            meta_extra={"live": {"scope": params.scope, "cacheKey": key.digest}},
            generation_id=generation_id,
        )
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return generation, budget


def _ready(key: LiveKey) -> AlsoInTransaction:
    """Mark the key ready in the transaction that stores its image."""

    async def mark(session: AsyncSession, image: Image) -> None:
        await session.execute(
            update(LiveEntry)
            .where(LiveEntry.project_id == key.project_id, LiveEntry.cache_key == key.digest)
            .values(status="ready", image_id=image.id, updated_at=utcnow())
        )

    return mark


async def _existing(
    session: AsyncSession, key: LiveKey
) -> tuple[LiveEntry | None, LiveRecord | None]:
    entry = (
        await session.execute(
            select(LiveEntry).where(
                LiveEntry.project_id == key.project_id, LiveEntry.cache_key == key.digest
            )
        )
    ).scalar_one_or_none()
    if entry is None or entry.status != "ready" or entry.canonical != key.canonical:
        return entry, None
    image = await session.get(Image, entry.image_id)
    if image is None or image.deleted_at is not None:
        return entry, None
    return entry, image_record(image, key.canonical)


async def _claim(
    services: Services,
    session: AsyncSession,
    key: LiveKey,
    entry: LiveEntry | None,
    generation_id: str,
) -> bool:
    """Become the one caller that generates this key, for `generation_id`. The unique row
    is the arbiter; the claim stays in the caller's transaction."""
    now = utcnow()
    if entry is None:
        session.add(
            LiveEntry(
                project_id=key.project_id,
                cache_key=key.digest,
                canonical=key.canonical,
                scope=key.scope,
                status="pending",
                generation_id=generation_id,
                created_at=now,
                updated_at=now,
            )
        )
        try:
            await session.flush()  # the unique row: a concurrent claimant waits or fails here
            return True
        except IntegrityError:
            await session.rollback()
            return False
    # The claimant touches its row every lease/3; a row untouched for two leases was left by
    # a process that died mid-generation, and may be taken over.
    stale_pending = now - timedelta(milliseconds=services.settings.lock_lease_ms * 2)
    failed_before = now - timedelta(seconds=services.settings.failure_ttl_s)
    retryable = (entry.status == "failed" and entry.updated_at <= failed_before) or (
        entry.status == "pending" and entry.updated_at <= stale_pending
    )
    if entry.status == "ready" or retryable:  # ready but its image is gone: generate anew
        # Read before the UPDATE, which refreshes `entry` in the session.
        abandoned = (entry.project_id, entry.scope, entry.generation_id)
        took_over = entry.status == "pending"  # from a claimant that died mid-generation
        result = await session.execute(
            update(LiveEntry)
            .where(LiveEntry.id == entry.id, LiveEntry.updated_at == entry.updated_at)
            .values(
                status="pending",
                image_id=None,
                generation_id=generation_id,
                canonical=key.canonical,
                updated_at=now,
            )
        )
        if rowcount(result) != 1:
            await session.rollback()
            return False
        if took_over:
            await abandon_claim(session, *abandoned)
        return True
    if entry.status == "failed":
        raise GenerationFailed(
            "The last attempt for this image failed; it will be retried shortly.",
            headers={"Retry-After": str(max(1, int(services.settings.failure_ttl_s)))},
        )
    return False


async def _admit(services: Services, params: LiveParams) -> BudgetState | None:
    """The per-key or per-IP bucket; only for a miss about to generate. Its state becomes
    the miss's X-RateLimit-* headers (a 429 carries them too)."""
    if params.key_id:
        return await spend_key_budget(services, params.key_id)
    if params.client_ip:
        return await spend_ip_budget(services, params.project_id, params.client_ip)
    return None


async def abandon_claim(
    session: AsyncSession, project_id: str, scope: str, generation_id: str | None
) -> None:
    """A claim whose process died (its `pending` row untouched for two leases) was just taken
    over or removed, in this transaction: its generation ends `failed` and gives its scope
    count back. The caller's conditional write on the claim makes this happen once."""
    await session.execute(
        update(Generation)
        .where(Generation.id == generation_id, Generation.status.in_(("pending", "processing")))
        .values(status="failed", error_message=INTERRUPTED, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    await uncount_scope(session, project_id, scope)


async def _set_entry(services: Services, key: LiveKey, **values: Any) -> None:
    async with services.sessions() as session:
        await session.execute(
            update(LiveEntry)
            .where(LiveEntry.project_id == key.project_id, LiveEntry.cache_key == key.digest)
            .values(updated_at=utcnow(), **values)
        )
        await session.commit()


async def _heartbeat(services: Services, key: LiveKey) -> None:
    """Keep the claim fresh while this process generates."""
    interval = services.settings.lock_lease_ms / 3000
    while True:
        await asyncio.sleep(interval)
        try:
            await _set_entry(services, key)
        except Exception:
            log.warning("could not renew the claim on live key %s", key.digest)


async def _release(services: Services, key: LiveKey, generation_id: str, failed: bool) -> None:
    """End this caller's claim without an image, giving its scope count back in the same
    transaction: a failed generation is remembered briefly, anything else frees the key."""
    ours = (
        LiveEntry.project_id == key.project_id,
        LiveEntry.cache_key == key.digest,
        LiveEntry.status == "pending",
        LiveEntry.generation_id == generation_id,  # not a claim taken over from us
    )
    try:
        async with services.sessions() as session:
            if failed:
                ended = await session.execute(
                    update(LiveEntry).where(*ours).values(status="failed", updated_at=utcnow())
                )
            else:
                ended = await session.execute(delete(LiveEntry).where(*ours))
            if rowcount(ended) == 1:
                await uncount_scope(session, key.project_id, key.scope)
            await session.commit()
    except Exception:
        log.exception("could not release live key %s", key.digest)


async def _publish(
    services: Services, project: ProjectCtx, key: LiveKey, record: LiveRecord
) -> None:
    """Write the manifest (the edge's fallback without Redis) and the index entry, at once.
    Both are caches of the database row: the manifest is not flushed to disk (after a crash
    that loses it, the next miss finds the row and writes it again)."""
    manifest, indexed = await asyncio.gather(
        services.store.put(
            manifest_key(project.organization_slug, project.project_slug, key.digest),
            record.to_json(),
            "application/json",
            durable=False,
        ),
        services.index.set(key.digest, record),
        return_exceptions=True,
    )
    if isinstance(manifest, BaseException):
        log.warning("could not write manifest for %s: %s", key.digest, manifest)
    if isinstance(indexed, BaseException):
        log.warning("index unavailable; %s served from manifest until it returns", key.digest)
