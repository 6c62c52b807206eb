"""In-process caches: the L1 of ready-to-send responses, and a small expiring map.

Both are plain OrderedDicts: every operation is O(1) (amortised for the expiring map), and
nothing here awaits, so no lock is needed on one event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Headers = list[tuple[bytes, bytes]]

# What an entry costs beyond its body and headers: the key, the dict slot, the objects.
_ENTRY_OVERHEAD = 256


@dataclass(slots=True)
class Entry:
    """A response ready to send: status line, headers prepared once, body."""

    status: int
    headers: Headers  # full 200 headers, Content-Length included
    not_modified_headers: Headers  # what a 304 carries: the caching headers, no body ones
    body: bytes
    etag: str
    image_id: str
    cost: int = 0
    # The headers as HTTP/1.1 lines, for the server protocol's fast path; made by `put`.
    wire: bytes = b""
    wire_not_modified: bytes = b""


class ResponseCache:
    """An LRU bounded in bytes (body + headers + overhead), keyed by the canonical key.

    A secondary map image id → keys lets an invalidation drop every entry of one image.
    """

    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._by_image: dict[str, set[str]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def peek(self, key: str) -> Entry | None:
        """Like get, but a miss is not counted (the caller will ask `get` again)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return entry

    def fits(self, size: int) -> bool:
        """Whether a body of `size` bytes may enter the cache at all."""
        return size <= self.max_entry_bytes and size + _ENTRY_OVERHEAD <= self.max_bytes

    def put(self, key: str, entry: Entry) -> bool:
        """Insert (or replace) `key`; False when the entry is too large to be kept."""
        if not entry.wire:  # an entry from the disk tier comes with its lines
            entry.wire = _wire(entry.headers)
            entry.wire_not_modified = _wire(entry.not_modified_headers)
        entry.cost = _cost(key, entry)
        if len(entry.body) > self.max_entry_bytes or entry.cost > self.max_bytes:
            self.drop(key)
            return False
        self.drop(key)
        self._entries[key] = entry
        self._by_image.setdefault(entry.image_id, set()).add(key)
        self.bytes += entry.cost
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self.drop(oldest)
            self.evictions += 1
        return True

    def drop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.cost
        keys = self._by_image.get(entry.image_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_image[entry.image_id]
        return True

    def drop_image(self, image_id: str) -> int:
        """Remove every entry holding this image; returns how many went."""
        keys = self._by_image.pop(image_id, set())
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.bytes -= entry.cost
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._by_image.clear()
        self.bytes = 0

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }


def _wire(headers: Headers) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def _cost(key: str, entry: Entry) -> int:
    headers = sum(len(k) + len(v) for k, v in entry.headers)
    headers += sum(len(k) + len(v) for k, v in entry.not_modified_headers)
    headers += len(entry.wire) + len(entry.wire_not_modified)
    return len(entry.body) + headers + len(key) + _ENTRY_OVERHEAD


K = TypeVar("K")
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    """A bounded map whose values expire `ttl_s` after they were set (oldest out first)."""

    def __init__(
        self, ttl_s: float, max_items: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._clock = clock
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> tuple[bool, V | None]:
        """(found, value); an expired value is not found."""
        item = self._items.get(key)
        if item is None:
            return False, None
        if item[1] <= self._clock():
            del self._items[key]
            return False, None
        return True, item[0]

    def set(self, key: K, value: V, ttl_s: float | None = None) -> None:
        self._items.pop(key, None)
        self._items[key] = (value, self._clock() + (self.ttl_s if ttl_s is None else ttl_s))
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def drop_where(self, predicate: Callable[[V], bool]) -> int:
        """Remove every value the predicate selects; O(n), for rare events (deletes)."""
        doomed = [k for k, (v, _) in self._items.items() if predicate(v)]
        for k in doomed:
            del self._items[k]
        return len(doomed)

    def clear(self) -> None:
        self._items.clear()
