"""The tiers a response is looked up in: L1 → disk → index + object storage.

`Tiers` holds the ready-to-send responses (the L1 in this process, the disk tier shared by
the host's processes) behind one small interface: `peek` without waiting (the fast path), `get`
(may read the disk on a thread), `keep`. `Stored` finds a live key's record in the index (else its
manifest) and reads its bytes from object storage into an entry for `Tiers`."""

from __future__ import annotations

import asyncio
import logging

from cache.index import Index, LiveRecord
from cache.live_key import manifest_key
from cache.metrics import Metrics
from cache.objects import ObjectNotFound, ObjectStore
from edge.disk_cache import Checked, DiskCache, FileBody, WouldBlock
from edge.lru import Entry, Headers, ResponseCache
from edge.responses import IMMUTABLE, make_entry

log = logging.getLogger("banatie.edge")


class Tiers:
    """The L1, then the disk tier (None: no disk tier)."""

    def __init__(self, l1: ResponseCache, disk: DiskCache | None) -> None:
        self.l1 = l1
        self.disk = disk
        self._drops = 0  # entries dropped; a disk read promotes only if none came meanwhile

    def peek(self, key: str) -> Entry | tuple[Checked, FileBody] | None:
        """The response without waiting: the L1 entry; else a disk file this process has
        read whole before, to send from the file (os.sendfile); else the disk entry when its
        file is in the page cache (promoted into the L1)."""
        entry = self.l1.peek(key)
        if entry is not None or self.disk is None:
            return entry
        sendable = self.disk.open_checked(key)
        if sendable is not None:
            return sendable
        try:
            entry = self.disk.peek(key)
        except WouldBlock:
            return None
        if entry is not None:
            self.l1.put(key, entry)
        return entry

    async def get(self, key: str) -> Entry | None:
        """The entry from the L1, else from disk (read on a thread outside the page cache)."""
        entry = self.l1.get(key)
        if entry is None and self.disk is not None:
            drops = self._drops
            entry = await self.disk.get(key)
            if entry is not None and drops == self._drops:
                self.l1.put(key, entry)
        return entry

    def holds(self, size: int) -> bool:
        """Whether a body of `size` is read whole and kept (L1 or disk), rather than streamed."""
        return self.l1.fits(size) or (self.disk is not None and size <= self.disk.max_entry_bytes)

    def keep(self, key: str, entry: Entry) -> None:
        """A response just read from storage or made: into the L1 and onto the disk."""
        self.l1.put(key, entry)
        if self.disk is not None:
            self.disk.put(key, entry)

    def drop_image(self, image_id: str) -> None:
        self._drops += 1
        self.l1.drop_image(image_id)
        if self.disk is not None:
            self.disk.drop_image(image_id)

    def clear(self) -> None:
        self._drops += 1
        self.l1.clear()
        if self.disk is not None:
            self.disk.clear()


class Stored:
    """Records in the index (else the manifest in object storage) and their bytes."""

    def __init__(self, index: Index, store: ObjectStore, metrics: Metrics) -> None:
        self.index = index
        self.store = store
        self.metrics = metrics
        self._lookups: dict[str, asyncio.Future[LiveRecord | None]] = {}

    async def shared_lookup(
        self, digest: str, canonical: str, org: str, project: str
    ) -> LiveRecord | None:
        """One lookup per key at a time: a herd of identical L1 misses shares it."""
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self.lookup(digest, canonical, org, project))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        return await asyncio.shield(lookup)

    async def lookup(
        self, digest: str, canonical: str, org: str, project: str, tally: bool = True
    ) -> LiveRecord | None:
        """The record for a key: the index, else the manifest (written back to the index).
        `tally` counts the answer as a cache hit of its tier."""
        index_up = True
        try:
            record = await self.index.get(digest)
        except ConnectionError:
            record, index_up = None, False
        if record is not None:
            if record.canonical == canonical:
                if tally:
                    self.metrics.hits["index"] += 1
                return record
            log.warning("index digest %s holds another key; ignoring it", digest)
        try:
            raw = await self.store.read(manifest_key(org, project, digest))
            record = LiveRecord.from_json(raw)
        except ObjectNotFound:
            return None
        except (ValueError, TypeError):
            log.warning("unreadable manifest for %s/%s %s", org, project, digest)
            return None
        if record.canonical != canonical:
            return None
        if index_up:
            await self.remember(digest, record)
        if tally:
            self.metrics.hits["manifest"] += 1
        return record

    async def remember(self, digest: str, record: LiveRecord) -> None:
        """Write a record to the index; an index that is down only costs a later lookup."""
        try:
            await self.index.set(digest, record)
        except ConnectionError:
            pass

    async def load(self, record: LiveRecord, status: bytes, extra: Headers) -> Entry | None:
        """The record's bytes as an entry (None: they are gone from storage)."""
        try:
            body = await self.store.read(record.object_key)
        except ObjectNotFound:
            log.warning("image %s missing from storage at %s", record.image_id, record.object_key)
            return None
        return make_entry(record, body, status, IMMUTABLE, extra)
