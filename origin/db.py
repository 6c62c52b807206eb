"""The database: async engine on SQLite (default) or PostgreSQL, migrations applied at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, CursorResult, Result, Select, event, func, select, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> AsyncEngine:
    """An engine tuned for the dialect: WAL and a busy timeout on SQLite."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: object) -> None:  # a DB-API connection
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


# Any constant: the advisory lock under which PostgreSQL clients migrate, one at a time.
MIGRATION_LOCK = 0x62616E61


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration. Processes that start together (workers) take
    turns, and the later ones find nothing left to do."""

    def upgrade(connection: Connection) -> None:
        cfg = _alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        elif conn.dialect.name == "sqlite":
            # The driver begins no transaction before DDL: begin one that takes the write lock.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        await conn.run_sync(upgrade)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched. session.execute() is typed as returning a plain
    Result, but for those statements it is a CursorResult, which alone has rowcount."""
    assert isinstance(result, CursorResult)
    return result.rowcount


async def paged(
    session: AsyncSession, query: Select[Any], limit: int, offset: int, *order: Any
) -> tuple[list[Any], int]:
    """One page of `query` in `order`, and the total number of rows it matches."""
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = (await session.execute(query.order_by(*order).limit(limit).offset(offset))).scalars()
    return list(rows), total or 0
