"""Producing a generation's image: wait for a slot, run the model, store the output and
settle the row in one transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from cache.errors import ApiError, GenerationFailed, GenerationNotFound, UpstreamUnavailable
from origin.aliases import assign_project_alias, move_image_aliases, set_flow_alias
from origin.flows import ensure_flow
from origin.generations import mark_failed, stale_after_s
from origin.generators import GeneratorError, GeneratorUnavailable, ImageRequest
from origin.images import ProjectCtx, aliases_moved, forget_everywhere, new_image
from origin.imaging import inspect_generated_async
from origin.models import Generation, Image, utcnow
from origin.references import load_references
from origin.services import GenerationTicket, Services

log = logging.getLogger("banatie.origin")

GENERATED_MAX_BYTES = 64 * 1024 * 1024


async def run_generation(
    services: Services,
    project: ProjectCtx,
    generation_id: str,
    ticket: GenerationTicket,
    *,
    regenerate: bool = False,
    also: AlsoInTransaction | None = None,
) -> Generation:
    """Wait for the ticket's turn, then enhance, generate and store (with `also`, see
    `produce`); the row ends `success` or `failed` whatever happens, and the ticket is
    released."""
    try:
        await _wait_for_turn(services, ticket, generation_id)
        async with services.sessions() as session:
            generation = await session.get(Generation, generation_id)
            assert generation is not None
            generation.status = "processing"
            generation.error_message = None
            generation.updated_at = utcnow()
            await session.commit()
        produced = await produce(services, project, generation, regenerate=regenerate, also=also)
        return produced.generation
    finally:
        ticket.release()


async def _wait_for_turn(services: Services, ticket: GenerationTicket, generation_id: str) -> None:
    """While queued, touch the row now and then: the interrupted-sweep leaves it alone."""
    every = stale_after_s(services.settings) / 3
    while not await ticket.start(within=every):
        async with services.sessions() as session:
            await session.execute(
                update(Generation)
                .where(Generation.id == generation_id, Generation.status == "pending")
                .values(updated_at=utcnow())
            )
            await session.commit()


@dataclass
class Produced:
    generation: Generation
    image: Image
    data: bytes
    model_ms: float  # time spent waiting on the model (enhancement + image), not our own


# Work done in the transaction that stores the image (the live miss marks its key ready there).
AlsoInTransaction = Callable[[AsyncSession, Image], Awaitable[None]]


async def produce(
    services: Services,
    project: ProjectCtx,
    generation: Generation,
    *,
    regenerate: bool = False,
    also: AlsoInTransaction | None = None,
) -> Produced:
    """Run the model for a `processing` generation, store its image, and mark it `success`
    in one transaction (with `also`); on any failure mark it `failed` and raise."""
    generation_id = generation.id
    started = time.monotonic()
    try:
        references = await load_references(services, generation)
        prompt = generation.original_prompt
        if generation.auto_enhance:
            prompt = await services.generator.enhance(prompt, generation.template)
        result = await services.generator.generate(
            ImageRequest(prompt, generation.aspect_ratio, tuple(references))
        )
        model_ms = (time.monotonic() - started) * 1000
        facts = await inspect_generated_async(
            result.data, GENERATED_MAX_BYTES, services.settings.max_image_pixels
        )
    except (GeneratorError, GeneratorUnavailable, ApiError) as exc:
        await mark_failed(services, generation_id, str(exc), started)
        details = {"generationId": generation_id}
        if isinstance(exc, GeneratorUnavailable):
            raise UpstreamUnavailable(
                f"The image model is unavailable: {exc}", details=details
            ) from None
        raise GenerationFailed(f"The image model failed: {exc}", details=details) from None
    except Exception as exc:
        log.exception("generation %s failed unexpectedly", generation_id)
        await mark_failed(services, generation_id, "internal error", started)
        raise GenerationFailed(
            "The generation failed.", details={"generationId": generation_id}
        ) from exc
    try:
        async with services.sessions() as session:
            # The row as the caller left it (no read): a generation deleted meanwhile makes the
            # UPDATE match nothing, which the flush reports as StaleDataError.
            generation = await session.merge(generation, load=False)
            image = new_image(
                project,
                facts,
                source="generated",
                flow_id=generation.flow_id,
                generation_id=generation.id,
            )
            # The bytes are written while the rows are prepared; the commit waits for them, so a
            # crash can still leave bytes without a row, never a row without bytes.
            writing = asyncio.ensure_future(
                services.store.put(image.storage_key, result.data, facts.mime_type)
            )
            try:
                session.add(image)
                if regenerate and generation.output_image_id:
                    # Only what points at the old output moves: a deleted output gave its
                    # aliases up, and they may name other images by now.
                    old = await session.get(Image, generation.output_image_id)
                    if old is not None and old.deleted_at is None:
                        await move_image_aliases(session, old, image)
                else:
                    await _apply_requested_aliases(session, generation, image)
                generation.prompt = prompt
                generation.status = "success"
                generation.output_image_id = image.id
                generation.processing_time_ms = int((time.monotonic() - started) * 1000)
                generation.updated_at = utcnow()
                if also is not None:
                    await also(session, image)
                try:
                    await session.flush()
                except StaleDataError:
                    raise GenerationNotFound("The generation was deleted while it ran.") from None
            finally:
                await asyncio.wait([writing])
            await writing  # a failed write fails the generation's commit
            await session.commit()
            if image.alias:  # it may have moved here from another image: edges follow now
                await forget_everywhere(services, project, aliases_moved(project, (image.alias,)))
            return Produced(generation, image, result.data, model_ms)
    except GenerationNotFound:
        raise
    except Exception:  # storage or database down: the row must not stay `processing`
        try:
            await mark_failed(services, generation_id, "the image could not be stored", started)
        except Exception:
            log.exception("could not mark generation %s failed", generation_id)
        raise


async def _apply_requested_aliases(
    session: AsyncSession, generation: Generation, image: Image
) -> None:
    if generation.alias:
        await assign_project_alias(session, image, generation.alias)
    if generation.flow_alias and generation.flow_id:
        flow = await ensure_flow(session, generation.project_id, generation.flow_id)
        await set_flow_alias(session, flow, generation.flow_alias, image.id)
