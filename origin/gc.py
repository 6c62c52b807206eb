"""Stored objects that no row refers to: listed by default, removed on request."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache.objects import ObjectStore
from origin.models import Image, LiveEntry, Organization, Project

IMAGE_KEY = re.compile(r"^[^/]+/[^/]+/img/[^/]+$")
MANIFEST_KEY = re.compile(r"^([^/]+)/([^/]+)/live/([0-9a-f]{32})\.json$")


@dataclass
class Sweep:
    orphans: list[str] = field(default_factory=list)
    kept: int = 0
    removed: list[str] = field(default_factory=list)


async def _referenced(sessions: async_sessionmaker[AsyncSession]) -> tuple[set[str], set[str]]:
    async with sessions() as session:
        images = set((await session.execute(select(Image.storage_key))).scalars())
        manifests = {
            f"{org}/{project}/live/{digest}.json"
            for org, project, digest in await session.execute(
                select(Organization.slug, Project.slug, LiveEntry.cache_key)
                .join(Project, Project.id == LiveEntry.project_id)
                .join(Organization, Organization.id == Project.organization_id)
                .where(LiveEntry.status == "ready")
            )
        }
    return images, manifests


async def sweep(
    store: ObjectStore,
    sessions: async_sessionmaker[AsyncSession],
    *,
    delete: bool = False,
    grace_s: float = 30.0,
    progress: Callable[[str], None] = lambda _: None,
) -> Sweep:
    """Find objects without a row. Bytes are written before their row is committed, so a
    candidate is only removed if it is still unreferenced after `grace_s` seconds."""
    images, manifests = await _referenced(sessions)
    result = Sweep()
    async for key in store.keys():
        if IMAGE_KEY.match(key):
            referenced = key in images
        elif MANIFEST_KEY.match(key):
            referenced = key in manifests
        else:
            referenced = True  # not ours to judge
        if referenced:
            result.kept += 1
        else:
            result.orphans.append(key)
    progress(f"{len(result.orphans)} unreferenced of {len(result.orphans) + result.kept} objects")
    if not delete or not result.orphans:
        return result
    await asyncio.sleep(grace_s)
    images, manifests = await _referenced(sessions)
    for key in result.orphans:
        if key in images or key in manifests:
            continue
        await store.delete(key)
        result.removed.append(key)
        progress(f"removed {key}")
    return result
