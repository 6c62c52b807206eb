"""The real-server fixtures work: each answers a trivial request."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.servers import RedisServer


async def test_redis_answers_ping(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


def test_redis_server_restarts_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    with redis_server.stopped():
        assert not redis_server.ping()
    assert redis_server.ping()
    assert redis_server.port == port


async def test_postgres_answers_select_1(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_postgres_database_is_fresh_and_empty(postgres_database: str) -> None:
    engine = create_async_engine(postgres_database)
    try:
        async with engine.connect() as connection:
            name = (await connection.execute(text("SELECT current_database()"))).scalar()
            tables = await connection.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            )
            assert name is not None and name.startswith("t_")
            assert tables.scalar() == 0
    finally:
        await engine.dispose()
