"""Stored objects that no row refers to: listed by default, removed on request.

Judged: originals (`{org}/{project}/img/{id}`: their image row, deleted or not, since deletes
keep bytes), live manifests (`live/{xxh}.json`: a ready live entry) and variants
(`var/{xxh}.json` and the bytes it names: the manifest's source image must exist and not be
deleted). Anything else in the store is left alone."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cache.index import LiveRecord
from cache.objects import ObjectNotFound, ObjectStore
from origin.models import Image, LiveEntry, Organization, Project

IMAGE_KEY = re.compile(r"[^/]+/[^/]+/img/[^/]+")
MANIFEST_KEY = re.compile(r"([^/]+)/([^/]+)/live/([0-9a-f]{32})\.json")
VARIANT_KEY = re.compile(r"[^/]+/[^/]+/var/[0-9a-f]{32}")
VARIANT_MANIFEST_KEY = re.compile(r"[^/]+/[^/]+/var/[0-9a-f]{32}\.json")


@dataclass
class Sweep:
    orphans: list[str] = field(default_factory=list)
    kept: int = 0
    removed: list[str] = field(default_factory=list)


@dataclass
class _Referenced:
    images: set[str]  # storage keys of every image row
    manifests: set[str]  # live manifests of ready entries
    live_images: set[str]  # ids of images not deleted: what variants may derive from

    async def variant_kept(self, store: ObjectStore, manifest_key: str) -> str | None:
        """The bytes key a variant manifest names, if its source image is alive; else None."""
        try:
            record = LiveRecord.from_json(await store.read(manifest_key))
        except (ObjectNotFound, ValueError, TypeError):
            return None
        return record.object_key if record.image_id in self.live_images else None


async def _referenced(sessions: async_sessionmaker[AsyncSession]) -> _Referenced:
    async with sessions() as session:
        images = set((await session.execute(select(Image.storage_key))).scalars())
        live_images = set(
            (await session.execute(select(Image.id).where(Image.deleted_at.is_(None)))).scalars()
        )
        manifests = {
            f"{org}/{project}/live/{digest}.json"
            for org, project, digest in await session.execute(
                select(Organization.slug, Project.slug, LiveEntry.cache_key)
                .join(Project, Project.id == LiveEntry.project_id)
                .join(Organization, Organization.id == Project.organization_id)
                .where(LiveEntry.status == "ready")
            )
        }
    return _Referenced(images, manifests, live_images)


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
    refs = await _referenced(sessions)
    result = Sweep()
    keys = [key async for key in store.keys()]
    variant_bytes = await _variant_bytes_kept(store, refs, keys)
    for key in keys:
        if IMAGE_KEY.fullmatch(key):
            referenced = key in refs.images
        elif MANIFEST_KEY.fullmatch(key):
            referenced = key in refs.manifests
        elif VARIANT_MANIFEST_KEY.fullmatch(key):
            referenced = key.removesuffix(".json") in variant_bytes
        elif VARIANT_KEY.fullmatch(key):
            referenced = key in variant_bytes
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
    refs = await _referenced(sessions)  # again: rows committed meanwhile keep their objects
    variant_bytes = await _variant_bytes_kept(store, refs, result.orphans)
    for key in result.orphans:
        if key in refs.images or key in refs.manifests:
            continue
        if key.removesuffix(".json") in variant_bytes:
            continue
        if VARIANT_KEY.fullmatch(key) and await refs.variant_kept(store, key + ".json"):
            continue  # its manifest arrived during the grace period
        await store.delete(key)
        result.removed.append(key)
        progress(f"removed {key}")
    return result


async def _variant_bytes_kept(store: ObjectStore, refs: _Referenced, keys: list[str]) -> set[str]:
    """The variant bytes keys that a manifest among `keys` keeps (its source image alive)."""
    kept = set()
    for key in keys:
        if VARIANT_MANIFEST_KEY.fullmatch(key):
            named = await refs.variant_kept(store, key)
            if named == key.removesuffix(".json"):
                kept.add(named)
    return kept
