"""Flows: rows created lazily, counts computed, never stored."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import FlowHasNoGenerations, FlowNotFound
from origin.db import paged
from origin.envelope import is_uuid, iso
from origin.models import Flow, Generation, Image, utcnow
from origin.schemas.responses import FlowOut


async def ensure_flow(session: AsyncSession, project_id: str, flow_id: str) -> Flow:
    """The flow row, created when a flow id is used again (lazy flows materialise here)."""
    flow = await session.get(Flow, flow_id)
    if flow is not None:
        if flow.project_id != project_id:
            raise FlowNotFound("Flow not found.")
        return flow
    if await _used_elsewhere(session, project_id, flow_id):
        # Another project's lazy flow: its id is not ours to take.
        raise FlowNotFound("Flow not found.")
    flow = Flow(id=flow_id, project_id=project_id, aliases={}, meta={})
    try:
        async with session.begin_nested():
            session.add(flow)
    except IntegrityError:  # created concurrently
        flow = await session.get(Flow, flow_id)
        if flow is None or flow.project_id != project_id:
            raise FlowNotFound("Flow not found.") from None
    return flow


async def _used_elsewhere(session: AsyncSession, project_id: str, flow_id: str) -> bool:
    for table in (Generation, Image):
        other = await session.scalar(
            select(table.id)
            .where(table.flow_id == flow_id, table.project_id != project_id)
            .limit(1)
        )
        if other is not None:
            return True
    return False


async def find_flow(session: AsyncSession, project_id: str, flow_id: str) -> Flow:
    if not is_uuid(flow_id):
        raise FlowNotFound("Flow not found.")
    flow = await session.get(Flow, flow_id.lower())
    if flow is None or flow.project_id != project_id:
        raise FlowNotFound("Flow not found.")
    return flow


async def flow_json(session: AsyncSession, flow: Flow) -> FlowOut:
    generations = await session.scalar(
        select(func.count())
        .select_from(Generation)
        .where(
            Generation.project_id == flow.project_id,
            Generation.flow_id == flow.id,
            Generation.deleted_at.is_(None),
        )
    )
    images = await session.scalar(
        select(func.count())
        .select_from(Image)
        .where(
            Image.project_id == flow.project_id,
            Image.flow_id == flow.id,
            Image.deleted_at.is_(None),
        )
    )
    return FlowOut(
        id=flow.id,
        project_id=flow.project_id,
        aliases=flow.aliases or {},
        generation_count=generations or 0,
        image_count=images or 0,
        meta=flow.meta or {},
        created_at=iso(flow.created_at),
        updated_at=iso(flow.updated_at),
    )


async def newest_generation(session: AsyncSession, flow: Flow) -> Generation:
    """The flow's most recent generation (not deleted); 400 when it has none."""
    generation = (
        await session.execute(
            select(Generation)
            .where(
                Generation.project_id == flow.project_id,
                Generation.flow_id == flow.id,
                Generation.deleted_at.is_(None),
            )
            .order_by(Generation.created_at.desc(), Generation.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if generation is None:
        raise FlowHasNoGenerations("This flow has no generation to regenerate.")
    return generation


async def delete_flow(session: AsyncSession, flow: Flow) -> None:
    """Hard delete of the row only; its generations and images stay, detached."""
    now = utcnow()
    for table in (Generation, Image):
        await session.execute(
            update(table)
            .where(table.project_id == flow.project_id, table.flow_id == flow.id)
            .values(flow_id=None, updated_at=now)
        )
    await session.delete(flow)
    await session.flush()


async def list_flows(
    session: AsyncSession, project_id: str, limit: int, offset: int
) -> tuple[list[Flow], int]:
    """A page of the project's flows, newest first, and how many there are."""
    query = select(Flow).where(Flow.project_id == project_id)
    return await paged(session, query, limit, offset, Flow.created_at.desc(), Flow.id)
