"""API keys: minted once, stored as SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, false, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import Forbidden, Unauthorized, ValidationError
from cache.patterns import SLUG_PATTERN
from origin.models import ApiKey, Organization, Project, utcnow
from origin.projects import ensure_project

KEY_PATTERN = re.compile(r"bnt_[0-9a-f]{64}")


def mint_key() -> str:
    return "bnt_" + secrets.token_bytes(32).hex()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    key_id: str
    type: str  # master | project
    organization_id: str | None
    project_id: str | None
    organization_slug: str | None
    project_slug: str | None
    expires_at: datetime | None


async def authenticate(session: AsyncSession, key: str | None) -> Principal:
    """The principal behind `key`; 401 when missing, malformed, unknown, revoked or expired."""
    if not key:
        raise Unauthorized("An X-API-Key header is required.")
    if not KEY_PATTERN.fullmatch(key):
        raise Unauthorized("The API key is not valid.")
    return await principal_by_hash(session, hash_key(key))


async def principal_by_hash(session: AsyncSession, digest: str) -> Principal:
    """The principal whose key hashes to `digest` (the one key lookup, for the API and the
    edge alike); 401 when unknown, revoked or expired."""
    row = (
        await session.execute(
            select(ApiKey, Organization.slug, Project.slug)
            .outerjoin(Organization, Organization.id == ApiKey.organization_id)
            .outerjoin(Project, Project.id == ApiKey.project_id)
            .where(ApiKey.key_hash == digest)
        )
    ).first()
    # The lookup is by hash; compare again in constant time so timing says nothing.
    if row is None or not hmac.compare_digest(row[0].key_hash, digest):
        raise Unauthorized("The API key is not valid.")
    api_key, org_slug, project_slug = row
    if api_key.revoked_at is not None:
        raise Unauthorized("The API key has been revoked.")
    if api_key.expires_at is not None and api_key.expires_at <= utcnow():
        raise Unauthorized("The API key has expired.")
    return Principal(
        api_key.id,
        api_key.type,
        api_key.organization_id,
        api_key.project_id,
        org_slug,
        project_slug,
        api_key.expires_at,
    )


def require_project(principal: Principal) -> Principal:
    if principal.type != "project" or principal.project_id is None:
        raise Forbidden("This route needs a project key; a master key only manages keys.")
    return principal


def require_master(principal: Principal) -> Principal:
    if principal.type != "master":
        raise Forbidden("This route needs a master key.")
    return principal


def check_slug(value: object, field: str) -> str:
    if not isinstance(value, str) or not SLUG_PATTERN.fullmatch(value):
        raise ValidationError(
            f"{field} must be 1-64 lowercase letters, digits, '-' or '_'.", field=field
        )
    return value


@dataclass(frozen=True)
class CreatedKey:
    row: ApiKey
    secret: str
    organization_slug: str | None
    project_slug: str | None


async def create_key(
    session: AsyncSession,
    type: str,
    organization_slug: str | None = None,
    project_slug: str | None = None,
    name: str | None = None,
    expires_in_days: int | None = None,
) -> CreatedKey:
    """Mint and store a key; a project key creates its organization and project if missing."""
    secret = mint_key()
    row = ApiKey(key_hash=hash_key(secret), type=type, name=name)
    if expires_in_days is not None:
        row.expires_at = utcnow() + timedelta(days=expires_in_days)
    if type == "project":
        assert organization_slug and project_slug
        project = await ensure_project(session, organization_slug, project_slug)
        row.organization_id = project.organization_id
        row.project_id = project.id
    elif organization_slug:
        org = (
            await session.execute(
                select(Organization).where(Organization.slug == organization_slug)
            )
        ).scalar_one_or_none()
        if org is None:
            org = Organization(slug=organization_slug)
            session.add(org)
            await session.flush()
        row.organization_id = org.id
    session.add(row)
    await session.flush()
    return CreatedKey(row, secret, organization_slug, project_slug if type == "project" else None)


async def any_key_exists(session: AsyncSession) -> bool:
    """Any key at all, even revoked: once one was made, bootstrap is over."""
    return bool(await session.scalar(select(func.count()).select_from(ApiKey)))


async def lock_keys(session: AsyncSession) -> None:
    """Hold the key table until the transaction ends, so that "no key yet", checked after
    this, stays true until the key is added: concurrent first starts and bootstrap requests,
    in one process or several, mint one first key between them."""
    if session.get_bind().dialect.name == "postgresql":
        # Conflicts with itself and with any INSERT; plain reads go on.
        await session.execute(
            text(f"LOCK TABLE {ApiKey.__tablename__} IN SHARE ROW EXCLUSIVE MODE")
        )
    else:
        # SQLite has one writer at a time, and a write of no row takes that lock at once.
        await session.execute(delete(ApiKey).where(false()))


async def list_keys(session: AsyncSession) -> list[tuple[ApiKey, str | None, str | None]]:
    """Every key with its organization and project slugs (None for a master key), newest
    first."""
    rows = await session.execute(
        select(ApiKey, Organization.slug, Project.slug)
        .outerjoin(Organization, Organization.id == ApiKey.organization_id)
        .outerjoin(Project, Project.id == ApiKey.project_id)
        .order_by(ApiKey.created_at.desc())
    )
    return [(key, org, project) for key, org, project in rows]
