"""Images: bytes stored before the row, serialisation, soft delete with invalidation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cache.index import LiveRecord
from cache.invalidation import Invalidation
from cache.live_key import image_key, manifest_key
from cache.objects import ObjectStore
from origin.aliases import release_image_aliases
from origin.db import paged
from origin.envelope import iso
from origin.imaging import ImageFacts
from origin.models import Image, LiveEntry, new_id, utcnow
from origin.schemas.responses import ImageOut, Point
from origin.services import Services

log = logging.getLogger("banatie.origin")


@dataclass(frozen=True, slots=True)
class ProjectCtx:
    """The project a request acts on, with the slugs that name its storage and CDN paths."""

    project_id: str
    organization_slug: str
    project_slug: str


async def store_image(
    session: AsyncSession, store: ObjectStore, image: Image, data: bytes
) -> Image:
    """Write the bytes first, then add the row (from `new_image`): a crash can leave bytes,
    never a bare row."""
    await store.put(image.storage_key, data, image.mime_type)
    session.add(image)
    await session.flush()
    return image


def new_image(
    project: ProjectCtx,
    facts: ImageFacts,
    *,
    source: str,
    flow_id: str | None = None,
    generation_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Image:
    """A new image row (not yet added) with its id and the storage key of its bytes."""
    image_id = new_id()
    return Image(
        id=image_id,
        project_id=project.project_id,
        flow_id=flow_id,
        generation_id=generation_id,
        source=source,
        storage_key=image_key(project.organization_slug, project.project_slug, image_id),
        mime_type=facts.mime_type,
        file_size=facts.size,
        width=facts.width,
        height=facts.height,
        content_hash=facts.content_hash,
        meta=meta or {},
    )


def image_json(image: Image, project: ProjectCtx, public_url: str) -> ImageOut:
    cdn = f"{public_url}/cdn/{project.organization_slug}/{project.project_slug}"
    return ImageOut(
        id=image.id,
        project_id=image.project_id,
        flow_id=image.flow_id,
        generation_id=image.generation_id,
        source=image.source,
        alias=image.alias,
        storage_key=image.storage_key,
        storage_url=f"{cdn}/img/{image.id}",
        mime_type=image.mime_type,
        file_size=image.file_size,
        width=image.width,
        height=image.height,
        content_hash=image.content_hash,
        focal_point=Point(**image.focal_point) if image.focal_point else None,
        meta=image.meta or {},
        created_at=iso(image.created_at),
        updated_at=iso(image.updated_at),
        deleted_at=iso(image.deleted_at),
    )


def image_record(image: Image, canonical: str = "") -> LiveRecord:
    return LiveRecord(
        image_id=image.id,
        generation_id=image.generation_id,
        object_key=image.storage_key,
        content_type=image.mime_type,
        size=image.file_size,
        etag=f'"{image.content_hash}"',
        canonical=canonical,
        focal_point=(
            (image.focal_point["x"], image.focal_point["y"]) if image.focal_point else None
        ),
    )


async def record_changed(session: AsyncSession, image: Image) -> Invalidation:
    """The event that makes every edge re-read an image's record (its focal point moved, so
    its crops did): like a delete's, but the live entries stay and are republished on their
    next request. The caller commits, then calls `forget_everywhere` with it."""
    digests = tuple(
        (
            await session.execute(
                select(LiveEntry.cache_key).where(
                    LiveEntry.project_id == image.project_id, LiveEntry.image_id == image.id
                )
            )
        ).scalars()
    )
    return Invalidation(image.id, digests)


async def soft_delete_image(session: AsyncSession, image: Image) -> Invalidation:
    """Mark deleted, release aliases, forget its live entries; the caller commits, then
    calls `forget_everywhere` with the returned event."""
    now = utcnow()
    image.deleted_at = now
    image.updated_at = now
    await release_image_aliases(session, image)
    digests = tuple(
        (
            await session.execute(
                select(LiveEntry.cache_key).where(
                    LiveEntry.project_id == image.project_id, LiveEntry.image_id == image.id
                )
            )
        ).scalars()
    )
    await session.execute(
        delete(LiveEntry).where(
            LiveEntry.project_id == image.project_id, LiveEntry.image_id == image.id
        )
    )
    await session.flush()
    return Invalidation(image.id, digests)


def aliases_moved(project: ProjectCtx, aliases: tuple[str, ...]) -> Invalidation:
    """The event that makes every edge resolve these project aliases again."""
    return Invalidation("", aliases=tuple((project.project_id, alias) for alias in aliases))


async def forget_everywhere(services: Services, project: ProjectCtx, event: Invalidation) -> None:
    """Remove index entries and manifests, then tell every edge. Bytes stay in storage.
    With Redis the bus records the event (and the index removals) once Redis is back."""
    for digest in event.digests:
        try:
            await services.index.delete(digest)
        except Exception:
            log.warning("index unavailable while invalidating %s", digest)
        try:
            await services.store.delete(
                manifest_key(project.organization_slug, project.project_slug, digest)
            )
        except Exception:
            log.warning("storage unavailable while removing manifest %s", digest)
    try:
        await services.bus.publish(event)
    except Exception:
        log.warning("invalidation bus unavailable for image %s", event.image_id)


async def list_images(
    session: AsyncSession,
    project_id: str,
    limit: int,
    offset: int,
    *,
    include_deleted: bool = False,
    source: str | None = None,
    flow_id: str | None = None,
    alias: str | None = None,
) -> tuple[list[Image], int]:
    """A page of the project's images, newest first, and how many match in all."""
    query = select(Image).where(Image.project_id == project_id)
    if not include_deleted:
        query = query.where(Image.deleted_at.is_(None))
    if source is not None:
        query = query.where(Image.source == source)
    if flow_id is not None:
        query = query.where(Image.flow_id == flow_id)
    if alias is not None:
        query = query.where(Image.alias == alias)
    return await paged(session, query, limit, offset, Image.created_at.desc(), Image.id)
