"""Live scope rows: finding, listing and adding them, and the count of new generations each
scope allows (taken by a live miss, given back when its claim ends without an image)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import (
    ScopeAlreadyExists,
    ScopeGenerationsDisabled,
    ScopeLimitReached,
    ScopeNotFound,
)
from origin.db import paged, rowcount
from origin.models import LiveScope, utcnow


async def find_scope(session: AsyncSession, project_id: str, slug: str) -> LiveScope:
    scope = (
        await session.execute(
            select(LiveScope).where(LiveScope.project_id == project_id, LiveScope.slug == slug)
        )
    ).scalar_one_or_none()
    if scope is None:
        raise ScopeNotFound(f"No live scope {slug}.")
    return scope


async def list_scopes(
    session: AsyncSession, project_id: str, limit: int, offset: int
) -> tuple[list[LiveScope], int]:
    """A page of the project's scopes, newest first, and how many there are."""
    query = select(LiveScope).where(LiveScope.project_id == project_id)
    return await paged(session, query, limit, offset, LiveScope.created_at.desc(), LiveScope.id)


async def add_scope(session: AsyncSession, scope: LiveScope) -> None:
    """Store a new scope (committed); its slug taken in the project → 409."""
    session.add(scope)
    try:
        await session.commit()
    except IntegrityError:
        raise ScopeAlreadyExists(f"The scope {scope.slug} already exists.") from None


async def ensure_scope(
    session: AsyncSession, project_id: str, slug: str, default_limit: int
) -> LiveScope:
    """The scope `slug`, created with the default limit on first use (a live URL names it)."""
    scope = (
        await session.execute(
            select(LiveScope).where(LiveScope.project_id == project_id, LiveScope.slug == slug)
        )
    ).scalar_one_or_none()
    if scope is not None:
        return scope
    try:
        async with session.begin_nested():
            scope = LiveScope(
                project_id=project_id,
                slug=slug,
                new_generations_limit=default_limit,
                meta={},
            )
            session.add(scope)
    except IntegrityError:
        scope = (
            await session.execute(
                select(LiveScope).where(LiveScope.project_id == project_id, LiveScope.slug == slug)
            )
        ).scalar_one()
    return scope


async def count_scope(
    session: AsyncSession, project_id: str, slug: str, default_limit: int
) -> None:
    """Take one of the scope's new generations atomically (auto-creating the scope)."""
    taken = await session.execute(
        update(LiveScope)
        .where(
            LiveScope.project_id == project_id,
            LiveScope.slug == slug,
            LiveScope.allow_new_generations.is_(True),
            LiveScope.current_generations < LiveScope.new_generations_limit,
        )
        .values(
            current_generations=LiveScope.current_generations + 1,
            last_generated_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    if rowcount(taken) == 1:  # the common case: one statement
        return
    scope = await ensure_scope(session, project_id, slug, default_limit)
    if not scope.allow_new_generations:
        raise ScopeGenerationsDisabled(f"Scope {slug} does not allow new generations.")
    result = await session.execute(
        update(LiveScope)
        .where(
            LiveScope.id == scope.id,
            LiveScope.current_generations < LiveScope.new_generations_limit,
        )
        .values(
            current_generations=LiveScope.current_generations + 1,
            last_generated_at=utcnow(),
            updated_at=utcnow(),
        )
    )
    if rowcount(result) != 1:
        raise ScopeLimitReached(
            f"Scope {slug} has reached its limit of {scope.new_generations_limit} images."
        )


async def uncount_scope(session: AsyncSession, project_id: str, slug: str) -> None:
    """Give back the count a claim took (only scoped claims took one)."""
    if not slug:
        return
    await session.execute(
        update(LiveScope)
        .where(
            LiveScope.project_id == project_id,
            LiveScope.slug == slug,
            LiveScope.current_generations > 0,
        )
        .values(current_generations=LiveScope.current_generations - 1)
    )
