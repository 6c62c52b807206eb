"""Organizations and their projects: found by slug, created on first use."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import ProjectNotFound
from origin.models import Organization, Project


async def ensure_project(session: AsyncSession, org_slug: str, project_slug: str) -> Project:
    """The project `org_slug/project_slug`, created with its organization when missing."""
    org = (
        await session.execute(select(Organization).where(Organization.slug == org_slug))
    ).scalar_one_or_none()
    if org is None:
        org = Organization(slug=org_slug)
        session.add(org)
        await session.flush()
    project = (
        await session.execute(
            select(Project).where(Project.organization_id == org.id, Project.slug == project_slug)
        )
    ).scalar_one_or_none()
    if project is None:
        project = Project(organization_id=org.id, slug=project_slug)
        session.add(project)
        await session.flush()
    return project


async def find_project(session: AsyncSession, org_slug: str, project_slug: str) -> Project:
    project = (
        await session.execute(
            select(Project)
            .join(Organization, Organization.id == Project.organization_id)
            .where(Organization.slug == org_slug, Project.slug == project_slug)
        )
    ).scalar_one_or_none()
    if project is None:
        raise ProjectNotFound("No such project.")
    return project


async def live_project(session: AsyncSession, project_id: str) -> Project:
    """The project a live key names (the key being live, the project exists)."""
    project = await session.get(Project, project_id)
    assert project is not None  # the key that named it is live
    return project


async def any_project_exists(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(func.count()).select_from(Project)))
