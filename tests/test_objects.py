"""Object stores: the same contract on the local directory and on S3 (moto)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cache.objects import (
    CHUNK,
    InvalidObjectKey,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
)
from cache.objects.local import LocalStore
from cache.objects.s3 import S3Store
from tests.servers import free_port, new_bucket_name, s3_store_for

DATA = os.urandom(CHUNK * 5 + 12_345)  # > 1 MB, not a whole number of chunks


async def collect(store: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.get(key, start, end)])


# -- both backends ------------------------------------------------------------------------------


async def test_put_then_read_returns_the_bytes(store: ObjectStore) -> None:
    await store.put("org/proj/img/a.png", b"\x89PNG...", "image/png")
    assert await store.read("org/proj/img/a.png") == b"\x89PNG..."


async def test_get_streams_a_large_object_in_chunks(store: ObjectStore) -> None:
    await store.put("big.bin", DATA, "application/octet-stream")
    chunks = [chunk async for chunk in store.get("big.bin")]
    assert len(chunks) > 1
    assert all(len(chunk) <= CHUNK for chunk in chunks)
    assert b"".join(chunks) == DATA


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 0),
        (10, 19),
        (CHUNK - 1, CHUNK + 1),  # across a chunk boundary
        (CHUNK * 2, None),  # to the end
        (len(DATA) - 5, len(DATA) + 100),  # end past the object: clipped
    ],
)
async def test_get_honours_an_inclusive_range(
    store: ObjectStore, start: int, end: int | None
) -> None:
    await store.put("big.bin", DATA, "application/octet-stream")
    expected = DATA[start:] if end is None else DATA[start : end + 1]
    assert await collect(store, "big.bin", start, end) == expected


async def test_get_from_past_the_end_yields_nothing(store: ObjectStore) -> None:
    await store.put("small.txt", b"hello", "text/plain")
    assert await collect(store, "small.txt", 5) == b""
    assert await collect(store, "small.txt", 3, 2) == b""


async def test_head_reports_size_and_content_type(store: ObjectStore) -> None:
    await store.put("a/b.webp", b"x" * 1234, "image/webp")
    info = await store.head("a/b.webp")
    assert (info.key, info.size, info.content_type) == ("a/b.webp", 1234, "image/webp")


async def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    await store.put("k.json", b"old", "text/plain")
    await store.put("k.json", b'{"new": true}', "application/json")
    assert await store.read("k.json") == b'{"new": true}'
    assert (await store.head("k.json")).content_type == "application/json"


async def test_exists_only_for_stored_keys(store: ObjectStore) -> None:
    await store.put("here.png", b"1", "image/png")
    assert await store.exists("here.png")
    assert not await store.exists("gone.png")


async def test_delete_removes_the_object(store: ObjectStore) -> None:
    await store.put("doomed.png", b"1", "image/png")
    await store.delete("doomed.png")
    assert not await store.exists("doomed.png")
    with pytest.raises(ObjectNotFound):
        await store.read("doomed.png")
    await store.delete("doomed.png")  # deleting again is not an error


async def test_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.read("nope/missing.png")
    with pytest.raises(ObjectNotFound):
        await store.head("nope/missing.png")
    with pytest.raises(ObjectNotFound):
        await collect(store, "nope/missing.png")


async def test_keys_lists_stored_keys_under_a_prefix(store: ObjectStore) -> None:
    for key in ["a/1.png", "a/2.png", "a/b/3.png", "ab/4.png", "b/5.png"]:
        await store.put(key, b"x", "image/png")
    assert [k async for k in store.keys("a/")] == ["a/1.png", "a/2.png", "a/b/3.png"]
    assert [k async for k in store.keys("a")] == ["a/1.png", "a/2.png", "a/b/3.png", "ab/4.png"]
    assert [k async for k in store.keys("a/b/")] == ["a/b/3.png"]
    assert [k async for k in store.keys("zzz/")] == []
    assert len([k async for k in store.keys()]) == 5


@pytest.mark.parametrize("key", ["", "/abs", "../x", "a/../../b", "a//b", "a/./b", "a\\b"])
async def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        await store.put(key, b"x", "text/plain")


async def test_check_passes_for_a_usable_store(store: ObjectStore) -> None:
    await store.check()


# -- local directory ----------------------------------------------------------------------------


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../../b", "../objects-evil/x"])
async def test_local_key_cannot_escape_root(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "objects")
    await store.check()
    with pytest.raises(InvalidObjectKey):
        await store.put(key, b"x", "text/plain")
    assert files_under(tmp_path) == []


async def test_local_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalStore(tmp_path / "objects")
    await store.check()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(InvalidObjectKey):
        await store.put("link/x.png", b"x", "image/png")
    with pytest.raises(InvalidObjectKey):
        await store.read("link/x.png")
    assert list(outside.iterdir()) == []


async def test_local_hidden_names_are_reserved(local_store: LocalStore) -> None:
    with pytest.raises(InvalidObjectKey):
        await local_store.put("a/.b.png.type", b"x", "text/plain")


async def test_local_write_leaves_no_temp_files(local_store: LocalStore) -> None:
    await local_store.put("a/b.png", b"1", "image/png")
    await local_store.put("a/b.png", b"2", "image/png")
    assert files_under(local_store.root) == ["a/.b.png.type", "a/b.png"]
    assert [k async for k in local_store.keys()] == ["a/b.png"]


async def test_local_failed_write_keeps_the_old_object(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_store.put("a/b.png", b"old", "image/png")

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StorageUnavailable):
        await local_store.put("a/b.png", b"new", "image/png")
    monkeypatch.undo()
    assert await local_store.read("a/b.png") == b"old"
    assert files_under(local_store.root) == ["a/.b.png.type", "a/b.png"]


async def test_local_check_creates_the_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "deep" / "objects")
    await store.check()
    assert store.root.is_dir()


async def test_local_check_fails_when_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "objects").write_text("not a directory")
    with pytest.raises(StorageUnavailable, match="objects"):
        await LocalStore(tmp_path / "objects").check()


async def test_local_key_under_an_existing_object_is_refused(local_store: LocalStore) -> None:
    await local_store.put("a", b"x", "text/plain")
    with pytest.raises(InvalidObjectKey):
        await local_store.put("a/b", b"y", "text/plain")


# -- S3 -----------------------------------------------------------------------------------------


async def test_s3_check_names_a_missing_bucket(s3_endpoint: str) -> None:
    bucket = new_bucket_name()
    store = s3_store_for(s3_endpoint, bucket)
    try:
        with pytest.raises(StorageUnavailable, match=bucket):
            await store.check()
    finally:
        await store.close()


async def test_s3_get_from_a_missing_bucket_is_storage_unavailable(s3_endpoint: str) -> None:
    store = s3_store_for(s3_endpoint, new_bucket_name())
    try:
        with pytest.raises(StorageUnavailable):
            await collect(store, "a.png")
    finally:
        await store.close()


async def test_s3_unreachable_endpoint_is_storage_unavailable() -> None:
    store = s3_store_for(f"http://127.0.0.1:{free_port()}", "images")
    try:
        with pytest.raises(StorageUnavailable, match="images"):
            await store.check()
        with pytest.raises(StorageUnavailable):
            await store.put("a.png", b"x", "image/png")
        with pytest.raises(StorageUnavailable):
            await collect(store, "a.png")
    finally:
        await store.close()


async def test_s3_create_bucket_is_idempotent(s3_store: S3Store) -> None:
    await s3_store.create_bucket()
    await s3_store.check()
