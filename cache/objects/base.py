"""The object store interface, its errors and key rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

CHUNK = 256 * 1024


class ObjectNotFound(KeyError):
    """No object is stored under this key."""


class StorageUnavailable(RuntimeError):
    """The store cannot be reached or is misconfigured (missing bucket, ...)."""


class InvalidObjectKey(ValueError):
    """The key is empty, absolute, or would escape the store's root."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


class ObjectStore(Protocol):
    """Where image bytes and live manifests live."""

    async def put(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> None:
        """Write an object. `durable=False` may skip flushing it to disk (for objects that
        can be rebuilt from the database, like manifests); S3 ignores it."""
        ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end] (inclusive end, None = to the end) in chunks."""
        ...

    async def read(self, key: str) -> bytes: ...

    async def head(self, key: str) -> ObjectInfo: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> AsyncIterator[str]: ...

    async def check(self) -> None:
        """Raise StorageUnavailable when the store cannot be used."""
        ...

    async def close(self) -> None: ...


def validate_key(key: str) -> str:
    """Reject keys that are empty, absolute, or contain '..' segments or NUL bytes."""
    if not key or key.startswith("/") or "\x00" in key or "\\" in key:
        raise InvalidObjectKey(f"invalid object key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidObjectKey(f"invalid object key {key!r}")
    return key
