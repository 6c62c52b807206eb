"""Objects as files under one directory: the default backend for a single machine.

Each object is a file at `root/key`; its content type sits in a hidden `.{name}.type` file
beside it. Names starting with "." are reserved for those files and for temp files, so such
keys are refused and never listed.

Reads are plain blocking reads on the event loop: objects are page-cached, and such a read
costs far less than a hop to a thread (measured ≈21k vs ≈4k req/s for a 50 KB body). Writes
fsync (unless the caller says the object can be rebuilt), so they run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from cache.objects.base import (
    CHUNK,
    InvalidObjectKey,
    ObjectInfo,
    ObjectNotFound,
    StorageUnavailable,
    validate_key,
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# What a missing key looks like on disk: no file, a directory, or a file where a folder was.
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class LocalStore:
    """ObjectStore over a directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._safe_folders: set[Path] = set()

    async def put(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._write, key, path, data, content_type, durable)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end] (inclusive end, None = to the end) in chunks."""
        remaining = _range_length(start, end)
        path = self._path(key)
        try:
            f = open(path, "rb", buffering=0, opener=_no_follow)  # noqa: ASYNC230 - page-cached
        except _MISSING:
            raise ObjectNotFound(key) from None
        except OSError as e:
            _refuse_symlink(key, e)
            raise StorageUnavailable(f"cannot read object {key!r}: {e}") from e
        with f:
            f.seek(start)
            while remaining is None or remaining > 0:
                chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb", buffering=0, opener=_no_follow) as f:  # noqa: ASYNC230
                return f.readall()
        except _MISSING:
            raise ObjectNotFound(key) from None
        except OSError as e:
            _refuse_symlink(key, e)
            raise StorageUnavailable(f"cannot read object {key!r}: {e}") from e

    async def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except _MISSING:
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        try:
            content_type = _type_path(path).read_text().strip() or DEFAULT_CONTENT_TYPE
        except OSError:
            content_type = DEFAULT_CONTENT_TYPE
        return ObjectInfo(key=key, size=st.st_size, content_type=content_type)

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (as in S3)."""
        path = self._path(key)
        for p in (path, _type_path(path)):
            with contextlib.suppress(*_MISSING):
                p.unlink()

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._list, prefix):
            yield key

    async def check(self) -> None:
        await asyncio.to_thread(self._check)

    async def close(self) -> None:
        return None

    # -- paths ------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file for `key`, refusing any key that would land outside root."""
        validate_key(key)
        if any(part.startswith(".") for part in key.split("/")):
            raise InvalidObjectKey(f"object key {key!r} has a hidden segment (reserved)")
        path = self.root / key
        # Catches symlinks inside root that point out of it. Folders are few ({org}/{project}/
        # img, live): each is resolved once (a realpath costs an lstat per part); reads open
        # the file itself with O_NOFOLLOW.
        folder = path.parent
        if folder not in self._safe_folders:
            if not folder.resolve().is_relative_to(self.root):
                raise InvalidObjectKey(f"object key {key!r} escapes the store's root")
            self._safe_folders.add(folder)
        return path

    # -- blocking work, run in a thread -----------------------------------------------------

    def _write(
        self, key: str, path: Path, data: bytes, content_type: str, durable: bool = True
    ) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Type first: once the object appears, its type is already in place.
            _write_atomic(_type_path(path), content_type.encode(), durable)
            _write_atomic(path, data, durable)
            if durable:
                _fsync_dir(path.parent)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise InvalidObjectKey(
                f"object key {key!r} conflicts with an existing object or prefix"
            ) from None
        except OSError as e:
            raise StorageUnavailable(f"cannot write object {key!r} under {self.root}: {e}") from e

    def _list(self, prefix: str) -> list[str]:
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def _check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root, prefix=".check."):
                pass
        except OSError as e:
            raise StorageUnavailable(
                f"object directory {self.root} is not usable (OBJECTS_DIR): {e}"
            ) from e


def _no_follow(path: str, flags: int) -> int:
    """Open without following a symlink in the last part of the path."""
    return os.open(path, flags | os.O_NOFOLLOW)


def _refuse_symlink(key: str, error: OSError) -> None:
    if error.errno == errno.ELOOP:
        raise InvalidObjectKey(f"object key {key!r} is a symlink") from error


def _range_length(start: int, end: int | None) -> int | None:
    """How many bytes [start, end] covers; None = to the end."""
    if start < 0:
        raise ValueError(f"range start must be >= 0, got {start}")
    if end is None:
        return None
    return max(end - start + 1, 0)


def _type_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.type")


def _write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Readers see the old file or the new one, never a partial write; `durable` flushes
    the file to disk before it takes the name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
