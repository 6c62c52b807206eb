"""Shared pytest fixtures."""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from cache.objects import ObjectStore
from cache.objects.local import LocalStore
from cache.objects.s3 import S3Store
from tests.chromium import chromium
from tests.fake_gemini import FakeGemini, FakeGeminiServer
from tests.harness import Api, api_for
from tests.servers import (
    MotoServer,
    PostgresServer,
    RedisClusterServer,
    RedisServer,
    asyncpg_url,
    create_database,
    drop_database,
    is_postgres_url,
    new_bucket_name,
    s3_store_for,
)

# --- Real servers: Redis, PostgreSQL, S3 (tests/servers.py) --------------------------------
# Each is private to the session on a free loopback port, unless REDIS_URL / DATABASE_URL /
# S3_ENDPOINT point at one already running.


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server; `with redis_server.stopped():` takes it down for a while."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """REDIS_URL when set, else the private server's URL (data persists across tests)."""
    return os.environ.get("REDIS_URL") or request.getfixturevalue("redis_server").url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """REDIS_CLUSTER_URL when set, else a private 3-master cluster (`redis+cluster://...`)."""
    external = os.environ.get("REDIS_CLUSTER_URL")
    if external:
        yield external
        return
    cluster = RedisClusterServer()
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A postgresql+asyncpg URL: DATABASE_URL when it is PostgreSQL, else a private cluster."""
    external = os.environ.get("DATABASE_URL", "")
    if is_postgres_url(external):
        yield asyncpg_url(external)
        return
    server = PostgresServer()
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test (dropped after); its postgresql+asyncpg URL."""
    url = create_database(postgres_url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """S3_ENDPOINT when set, else a private moto server's URL."""
    external = os.environ.get("S3_ENDPOINT")
    if external:
        yield external
        return
    server = MotoServer()
    try:
        server.start()
        yield server.endpoint
    finally:
        server.close()


# --- Object stores (cache/objects) ---------------------------------------------------------


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


@pytest.fixture
async def s3_store(s3_endpoint: str) -> AsyncIterator[S3Store]:
    """An S3Store on a new, empty bucket (`s3_store.bucket`)."""
    store = s3_store_for(s3_endpoint, new_bucket_name())
    await store.create_bucket()
    yield store
    await store.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each backend in turn, empty: tests using it run once per backend."""
    return request.getfixturevalue(f"{request.param}_store")


# --- Fake Gemini (tests/fake_gemini.py) ----------------------------------------------------


@pytest.fixture(scope="session")
def fake_gemini() -> Iterator[FakeGeminiServer]:
    """One fake Gemini server on loopback for the whole session."""
    server = FakeGeminiServer().start()
    yield server
    server.stop()


@pytest.fixture
def gemini(fake_gemini: FakeGeminiServer) -> Iterator[FakeGemini]:
    """The session's fake Gemini, reset before and after each test; `.url` is its base URL."""
    fake_gemini.fake.reset()
    yield fake_gemini.fake
    fake_gemini.fake.reset()


# --- Headless Chromium (tests/chromium.py) ------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one module's tests (each opens its own context)."""
    yield from chromium()


# --- The service under test (tests/harness.py) ---------------------------------------------


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The origin over HTTP with a project key, on SQLite + local files and PostgreSQL + S3."""
    async for value in api_for(request, tmp_path):
        yield value


@pytest.fixture
async def sqlite_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The origin on the embedded defaults only (for tests about one engine's behaviour)."""
    async for value in api_for(request, tmp_path, "sqlite-local"):
        yield value
