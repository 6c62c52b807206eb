"""Variants through the same tiers as originals: index → manifest → a coalesced transform.

A variant is named by `var:{xxh3_128(canonical)}` (edge/variants.py): the source's content
hash, the normalised parameters and, for crops, the focal point. Its bytes are stored at
`{org}/{project}/var/{digest}`, its record (a LiveRecord) in the index and as a manifest
beside the bytes, so any edge, after any restart or Redis loss, finds it instead of encoding
again. A miss is coalesced like a generation (one transform per key, across processes when
the index has locks) and encoded on the bounded pool of edge/transform.py.

The edge's L1 sits in front of all this, keyed by the request (see `Want.l1_key`). One source
gets at most MAX_VARIANTS_PER_IMAGE variants (`VariantTally`): every new one costs an encode
and is stored forever, and the query can name millions (w x h x fit x format x q).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cache.errors import VariantLimitReached
from cache.index import Index, LiveRecord
from cache.index.redis import RedisIndex
from cache.objects import ObjectNotFound, ObjectStore
from cache.settings import Settings
from edge.coalesce import Coalescer, Locks
from edge.lru import Headers
from edge.transform import Limits, TransformPool, avif_supported, render
from edge.variants import (
    CONTENT_TYPES,
    VariantParser,
    VariantSpec,
    Want,
    variant_digest,
    variant_manifest_key,
    variant_object_key,
    want,
)

log = logging.getLogger("banatie.edge.variants")

TIMEOUT_S = 30.0  # one transform, or the wait for another process's
VARY_ACCEPT: Headers = [(b"vary", b"Accept")]


@dataclass(frozen=True, slots=True)
class Variant:
    record: LiveRecord  # image_id is the source's; etag the hash of `body`
    body: bytes
    made: bool  # encoded for this request (or for the requests it was coalesced with)


class VariantCache:
    def __init__(self, settings: Settings, store: ObjectStore, index: Index) -> None:
        self.store = store
        self.index = index
        self.avif = avif_supported()
        self.parse = VariantParser(
            settings.max_variant_dimension, settings.variant_quality, self.avif
        )
        self.limits = Limits(settings.max_variant_dimension, settings.max_variant_pixels)
        self.max_per_image = settings.max_variants_per_image
        self.tally = VariantTally(index)
        workers = settings.variant_workers or _cores()
        self.pool = TransformPool(workers, settings.variant_queue)
        self.coalescer: Coalescer[Variant] = Coalescer(
            # Keys in flight, transforming here or waiting on another process: the pool's own
            # bound (a 503 naming variants) is the one a burst meets first.
            max_concurrent=2 * self.pool.capacity,
            timeout_s=TIMEOUT_S,
            failure_ttl_s=settings.failure_ttl_s,
            locks=index if isinstance(index, Locks) else None,
            lease_ms=settings.lock_lease_ms,
            retry_after_s=1,
            busy="Too many image variants are being encoded right now; try again shortly.",
        )

    def want(self, spec: VariantSpec, headers: list[tuple[bytes, bytes]]) -> Want:
        """The spec with `format=auto` settled by the request's Accept header."""
        accept = None
        if spec.negotiates:
            accept = b",".join(v for k, v in headers if k == b"accept") or None
        return want(spec, accept, self.avif)

    async def get(
        self,
        project_id: str,
        org: str,
        project: str,
        source: LiveRecord,
        wanted: Want,
        source_bytes: Callable[[], Awaitable[bytes]],
    ) -> Variant:
        """The variant of `source`: from the index or a manifest, else made once and stored."""
        canonical = wanted.canonical(
            project_id, source.etag, source.content_type, source.focal_point
        )
        digest = variant_digest(canonical)
        found = await self._find(org, project, digest, canonical)
        if found is not None:
            return found
        fmt = wanted.output_format(source.content_type)
        tally = project_id + ":" + source.etag.strip('"')  # what its variants derive from

        async def make() -> Variant:
            made = await self.tally.count(tally)
            if made >= self.max_per_image:
                raise VariantLimitReached(
                    f"This image already has {made} variants, the most one image may have; "
                    "ask for one of the sizes and formats already made.",
                )
            data = await source_bytes()
            body, etag = await self.pool.run(
                _render_tagged, data, wanted.spec, fmt, source, self.limits
            )
            record = LiveRecord(
                image_id=source.image_id,
                generation_id=None,
                object_key=variant_object_key(org, project, digest),
                content_type=CONTENT_TYPES[fmt],
                size=len(body),
                etag=etag,
                canonical=canonical,
            )
            await self._keep(org, project, digest, record, body)
            await self.tally.add(tally)
            return Variant(record, body, True)

        async def made_elsewhere() -> Variant | None:
            return await self._find(org, project, digest, canonical)

        return await self.coalescer.run(digest, make, made_elsewhere)

    def close(self) -> None:
        self.pool.close()

    # -- tiers ------------------------------------------------------------------------------

    async def _find(self, org: str, project: str, digest: str, canonical: str) -> Variant | None:
        index_up = True
        try:
            record = await self.index.get(digest)
        except ConnectionError:
            record, index_up = None, False
        from_manifest = False
        if record is None or record.canonical != canonical:
            try:
                record = LiveRecord.from_json(
                    await self.store.read(variant_manifest_key(org, project, digest))
                )
            except ObjectNotFound:
                return None
            except (ValueError, TypeError):
                log.warning("unreadable variant manifest %s/%s %s", org, project, digest)
                return None
            if record.canonical != canonical:
                return None
            from_manifest = True
        try:
            body = await self.store.read(record.object_key)
        except ObjectNotFound:
            return None
        if from_manifest and index_up:
            try:
                await self.index.set(digest, record)
            except ConnectionError:
                pass
        return Variant(record, body, False)

    async def _keep(
        self, org: str, project: str, digest: str, record: LiveRecord, body: bytes
    ) -> None:
        """Bytes, then manifest, then index; a store that fails costs a later re-encode only."""
        try:
            await self.store.put(record.object_key, body, record.content_type)
            await self.store.put(
                variant_manifest_key(org, project, digest),
                record.to_json(),
                "application/json",
                durable=False,  # rebuilt by the next request if a crash loses it
            )
        except Exception as e:
            log.warning("variant %s not stored (%s); serving it uncached", digest, e)
            return
        try:
            await self.index.set(digest, record)
        except ConnectionError:
            pass


class VariantTally:
    """How many variants each source has had encoded (MAX_VARIANTS_PER_IMAGE): in Redis when
    the index is there (one count for every edge, kept across restarts), else, and while Redis
    is down, in this process. Counted after a variant is stored, so refusals cost nothing and
    a burst of new variants may pass the bound by the jobs in flight."""

    def __init__(self, index: Index) -> None:
        self._redis = index if isinstance(index, RedisIndex) else None
        self._local: dict[str, int] = {}

    async def count(self, name: str) -> int:
        if self._redis is not None and self._redis.healthy:
            try:
                return int(await self._redis.client.get(_tally_key(name)) or 0)
            except Exception:  # Redis errors, or a cluster client failing mid-reinitialise
                pass
        return self._local.get(name, 0)

    async def add(self, name: str) -> None:
        self._local[name] = self._local.get(name, 0) + 1
        if self._redis is not None and self._redis.healthy:
            try:
                await self._redis.client.incr(_tally_key(name))
            except Exception:  # as above: the count is a bound, never a failed request
                pass


def _tally_key(name: str) -> str:
    return f"variants:{{{name}}}"


def _render_tagged(
    data: bytes, spec: VariantSpec, fmt: str, source: LiveRecord, limits: Limits
) -> tuple[bytes, str]:
    """On a worker thread: the variant's bytes and their strong ETag."""
    body = render(data, spec, fmt, source.focal_point, limits)
    return body, f'"{hashlib.sha256(body).hexdigest()}"'


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
