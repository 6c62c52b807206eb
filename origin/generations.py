"""Generation rows: adding, finding and failing them, and how long one may go untouched."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import GenerationNotFound
from cache.settings import Settings
from origin.db import paged
from origin.envelope import is_uuid
from origin.flows import ensure_flow
from origin.generation_input import GenerationInput
from origin.images import ProjectCtx
from origin.models import Generation, new_id, utcnow
from origin.references import resolve_references
from origin.services import Services

INTERRUPTED = "interrupted: the process running it stopped before it finished"


async def add_generation(
    session: AsyncSession,
    project: ProjectCtx,
    data: GenerationInput,
    *,
    status: str = "pending",
    meta_extra: dict | None = None,
    generation_id: str | None = None,
) -> Generation:
    """Validate references, settle the flow and add the generation row (the caller commits)."""
    flow_id: str | None
    if not data.flow_given:
        flow_id = new_id()  # lazy: no row until the flow is used again
    else:
        flow_id = data.flow
    if flow_id is not None and (data.flow_given or data.flow_alias):
        await ensure_flow(session, project.project_id, flow_id)
    refs = await resolve_references(
        session, project.project_id, data.reference_inputs, data.prompt, flow_id
    )
    generation = Generation(
        id=generation_id or new_id(),
        project_id=project.project_id,
        flow_id=flow_id,
        status=status,
        prompt=data.prompt,
        original_prompt=data.prompt,
        auto_enhance=data.auto_enhance,
        aspect_ratio=data.aspect_ratio,
        template=data.template,
        alias=data.alias,
        flow_alias=data.flow_alias,
        reference_inputs=data.reference_inputs,
        referenced_images=refs,
        meta={**data.meta, **(meta_extra or {})},
    )
    session.add(generation)
    await session.flush()
    return generation


def stale_after_s(settings: Settings) -> float:
    """How long a `pending`/`processing` row can go untouched while someone works on it: a run
    is two model calls (enhancement, image), each bounded by GENERATION_TIMEOUT_S, plus one
    more of the same for references, checks and storage."""
    return 3 * settings.generation_timeout_s


async def mark_failed(services: Services, generation_id: str, message: str, started: float) -> None:
    async with services.sessions() as session:
        generation = await session.get(Generation, generation_id)
        if generation is None:
            return
        generation.status = "failed"
        generation.error_message = message[:2000]
        generation.processing_time_ms = int((time.monotonic() - started) * 1000)
        generation.updated_at = utcnow()
        await session.commit()


async def find_generation(session: AsyncSession, project_id: str, generation_id: str) -> Generation:
    if not is_uuid(generation_id):
        raise GenerationNotFound("Generation not found.")
    generation = (
        await session.execute(
            select(Generation).where(
                Generation.id == generation_id.lower(),
                Generation.project_id == project_id,
                Generation.deleted_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if generation is None:
        raise GenerationNotFound("Generation not found.")
    return generation


async def list_generations(
    session: AsyncSession,
    project_id: str,
    limit: int,
    offset: int,
    *,
    status: str | None = None,
    flow_id: str | None = None,
    include_deleted: bool = False,
) -> tuple[list[Generation], int]:
    """A page of the project's generations, newest first, and how many match in all."""
    query = select(Generation).where(Generation.project_id == project_id)
    if status is not None:
        query = query.where(Generation.status == status)
    if flow_id is not None:
        query = query.where(Generation.flow_id == flow_id)
    if not include_deleted:
        query = query.where(Generation.deleted_at.is_(None))
    return await paged(
        session, query, limit, offset, Generation.created_at.desc(), Generation.id.desc()
    )
