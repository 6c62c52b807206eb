"""A scope's live keys moved to new images: the key's generation regenerated, the key pointed
at its new image in the same transaction, then every edge told to forget the old one."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import ImageNotInScope, ValidationError
from cache.invalidation import Invalidation
from origin.db import rowcount
from origin.images import ProjectCtx, forget_everywhere
from origin.models import Generation, Image, LiveEntry, utcnow
from origin.production import AlsoInTransaction, run_generation
from origin.services import Services


@dataclass
class Regenerated:
    """One live key given a new image."""

    generation: Generation
    previous_image_id: str | None  # the image the key served until now


@dataclass
class ScopeKey:
    """A ready live key of a scope, as read before its regeneration."""

    entry_id: str
    cache_key: str
    generation_id: str
    replaced: list[str] = field(default_factory=list)  # the image the key pointed at


async def keys_to_regenerate(
    session: AsyncSession, project_id: str, scope: str, image_id: str | None
) -> list[ScopeKey]:
    """The scope's ready keys, or the one(s) serving `image_id`: 400 for an image the project
    does not have (as for a reference that does not resolve), 404 IMAGE_NOT_IN_SCOPE for one
    no key of the scope serves."""
    query = (
        select(LiveEntry.id, LiveEntry.cache_key, LiveEntry.generation_id)
        .join(Generation, Generation.id == LiveEntry.generation_id)
        .where(
            LiveEntry.project_id == project_id,
            LiveEntry.scope == scope,
            LiveEntry.status == "ready",
            Generation.deleted_at.is_(None),
        )
        .order_by(LiveEntry.created_at, LiveEntry.id)
    )
    if image_id is not None:
        query = query.where(LiveEntry.image_id == image_id)
    rows = (await session.execute(query)).all()
    # The inner join on the generation already leaves out entries without one.
    keys = [ScopeKey(entry, key, gen) for entry, key, gen in rows if gen is not None]
    if image_id is not None and not keys:
        image = await session.get(Image, image_id)
        if image is None or image.project_id != project_id or image.deleted_at is not None:
            raise ValidationError(
                f"Image {image_id} does not exist.",
                details={"field": "imageId", "value": image_id},
            )
        raise ImageNotInScope(f"No live key of scope {scope} serves image {image_id}.")
    return keys


async def regenerate_key(services: Services, project: ProjectCtx, key: ScopeKey) -> Regenerated:
    """A new image for one key (the caller has spent its budget unit); raises like any
    generation. Browsers keep what they cached under `immutable`; edges switch at once."""
    ticket = services.slots.reserve()
    generation = await run_generation(
        services, project, key.generation_id, ticket, regenerate=True, also=_repoint(key)
    )
    previous = key.replaced[0] if key.replaced else None
    if previous is not None:
        # As a delete does, less the row: index entry and manifest go, every edge drops the
        # old image's bytes for this key; the next request reads the key's new image.
        await forget_everywhere(services, project, Invalidation(previous, (key.cache_key,)))
    return Regenerated(generation, previous)


def _repoint(key: ScopeKey) -> AlsoInTransaction:
    """Point the key at the new image in the transaction that stores it, remembering the
    image it replaced (compare-and-set: a concurrent regeneration may have moved it)."""

    async def repoint(session: AsyncSession, image: Image) -> None:
        while True:
            current = await session.scalar(
                select(LiveEntry.image_id).where(
                    LiveEntry.id == key.entry_id, LiveEntry.status == "ready"
                )
            )
            if current is None:  # the key was deleted meanwhile: nothing serves the image
                return
            moved = await session.execute(
                update(LiveEntry)
                .where(LiveEntry.id == key.entry_id, LiveEntry.image_id == current)
                .values(image_id=image.id, updated_at=utcnow()),
                execution_options={"synchronize_session": False},
            )
            if rowcount(moved) == 1:
                key.replaced[:] = [current]
                return

    return repoint
