"""Tables. Timestamps are UTC-aware on SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes; SQLite hands back naive ones, which are UTC by construction."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "slug"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    slug: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Signed live URLs: at most two secrets verify at once, so a rotation breaks no URL.
    require_signed_urls: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    signing_secret: Mapped[str | None] = mapped_column(String(100))
    signing_secret_created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    previous_signing_secret: Mapped[str | None] = mapped_column(String(100))
    previous_signing_secret_created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(16))  # master | project
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organizations.id"))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Flow(Base):
    __tablename__ = "flows"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    aliases: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Image(Base):
    __tablename__ = "images"
    # NULLs are distinct on both engines, so released aliases (NULL) never collide.
    __table_args__ = (
        UniqueConstraint("project_id", "alias"),
        Index("ix_images_project_created", "project_id", "created_at"),
        Index("ix_images_flow", "flow_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    flow_id: Mapped[str | None] = mapped_column(String(36))  # lazy flows have no row yet
    generation_id: Mapped[str | None] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(String(16))  # generated | uploaded
    alias: Mapped[str | None] = mapped_column(String(50))
    storage_key: Mapped[str] = mapped_column(String(300))
    mime_type: Mapped[str] = mapped_column(String(32))
    file_size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    focal_point: Mapped[dict[str, float] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_project_created", "project_id", "created_at"),
        Index("ix_generations_flow", "flow_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    flow_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    prompt: Mapped[str] = mapped_column(Text)
    original_prompt: Mapped[str] = mapped_column(Text)
    auto_enhance: Mapped[bool] = mapped_column(Boolean, default=True)
    aspect_ratio: Mapped[str] = mapped_column(String(8), default="1:1")
    template: Mapped[str] = mapped_column(String(32), default="general")
    alias: Mapped[str | None] = mapped_column(String(50))  # requested output aliases,
    flow_alias: Mapped[str | None] = mapped_column(String(50))  # kept for retry/regenerate
    reference_inputs: Mapped[list[str]] = mapped_column(JSON, default=list)
    referenced_images: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    output_image_id: Mapped[str | None] = mapped_column(String(36))
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    processing_time_ms: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LiveScope(Base):
    __tablename__ = "live_scopes"
    __table_args__ = (UniqueConstraint("project_id", "slug"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    slug: Mapped[str] = mapped_column(String(64))
    allow_new_generations: Mapped[bool] = mapped_column(Boolean, default=True)
    new_generations_limit: Mapped[int] = mapped_column(Integer, default=30)
    current_generations: Mapped[int] = mapped_column(Integer, default=0)
    last_generated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class LiveEntry(Base):
    """One row per live cache key: the database's guarantee of one paid generation per key."""

    __tablename__ = "live_entries"
    __table_args__ = (UniqueConstraint("project_id", "cache_key"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    cache_key: Mapped[str] = mapped_column(String(32))
    canonical: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|ready|failed
    generation_id: Mapped[str | None] = mapped_column(String(36))
    image_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
