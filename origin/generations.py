"""Generations: validate, resolve references, run the generator, store the output."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from cache.errors import (
    ApiError,
    GenerationFailed,
    GenerationNotFound,
    UpstreamUnavailable,
    ValidationError,
)
from cache.settings import Settings
from origin.aliases import (
    ALIAS_PATTERN,
    aliases_in_prompt,
    assign_project_alias,
    check_alias,
    find_image,
    move_image_aliases,
    resolve_alias,
    set_flow_alias,
)
from origin.envelope import is_uuid, iso, meta_field, optional_bool, optional_str
from origin.flows import ensure_flow
from origin.generators import (
    ASPECT_RATIOS,
    TEMPLATES,
    GeneratorError,
    GeneratorUnavailable,
    ImageRequest,
    ReferenceImage,
)
from origin.images import ProjectCtx, aliases_moved, forget_everywhere, image_json, new_image
from origin.imaging import inspect_generated_async
from origin.models import Generation, Image, new_id, utcnow
from origin.services import GenerationTicket, Services

log = logging.getLogger("banatie.origin")

MAX_PROMPT = 5000
MAX_REFERENCES = 3
GENERATED_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class GenerationInput:
    prompt: str
    aspect_ratio: str
    auto_enhance: bool
    template: str
    reference_inputs: list[str]
    flow: str | None  # "absent" | None | uuid, see flow_choice
    flow_given: bool
    alias: str | None
    flow_alias: str | None
    meta: dict[str, Any]


def check_prompt(value: object, field: str = "prompt") -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field} is required and must be a string.", field=field)
    text = value.strip()
    if not 1 <= len(text) <= MAX_PROMPT:
        raise ValidationError(f"{field} must be 1 to {MAX_PROMPT} characters.", field=field)
    if "\x00" in text:
        raise ValidationError(f"{field} must not contain NUL characters.", field=field)
    return text


def check_ratio(value: object, field: str = "aspectRatio") -> str:
    if value is None:
        return "1:1"
    if not isinstance(value, str) or value not in ASPECT_RATIOS:
        raise ValidationError(f"{field} must be one of {', '.join(ASPECT_RATIOS)}.", field=field)
    return value


def check_template(value: object, field: str = "enhancementOptions.template") -> str:
    if value is None:
        return "general"
    if not isinstance(value, str) or value not in TEMPLATES:
        raise ValidationError(f"template must be one of {', '.join(TEMPLATES)}.", field=field)
    return value


def check_references(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("referenceImages must be a list of strings.", field="referenceImages")
    if len(value) > MAX_REFERENCES:
        raise ValidationError(
            f"At most {MAX_REFERENCES} reference images are accepted.", field="referenceImages"
        )
    return list(value)


def check_flow_id(body: dict[str, Any], field: str = "flowId") -> tuple[bool, str | None]:
    """(given, value): absent → (False, None); null → (True, None); uuid → (True, uuid)."""
    if field not in body:
        return False, None
    value = body[field]
    if value is None:
        return True, None
    if not is_uuid(value):
        raise ValidationError(f"{field} must be a UUID or null.", field=field)
    return True, value.lower()


def parse_generation(body: dict[str, Any], max_meta_bytes: int) -> GenerationInput:
    options = body.get("enhancementOptions")
    if options is not None and not isinstance(options, dict):
        raise ValidationError("enhancementOptions must be an object.", field="enhancementOptions")
    flow_given, flow = check_flow_id(body)
    alias = optional_str(body, "alias")
    flow_alias = optional_str(body, "flowAlias")
    if flow_alias is not None and flow_given and flow is None:
        raise ValidationError("flowAlias needs a flow; flowId is null.", field="flowAlias")
    return GenerationInput(
        prompt=check_prompt(body.get("prompt")),
        aspect_ratio=check_ratio(body.get("aspectRatio")),
        auto_enhance=optional_bool(body, "autoEnhance", True),
        template=check_template((options or {}).get("template")),
        reference_inputs=check_references(body.get("referenceImages")),
        flow=flow,
        flow_given=flow_given,
        alias=check_alias(alias) if alias is not None else None,
        flow_alias=check_alias(flow_alias, "flowAlias") if flow_alias is not None else None,
        meta=meta_field(body, max_meta_bytes) or {},
    )


async def resolve_references(
    session: AsyncSession, project_id: str, explicit: list[str], prompt: str, flow_id: str | None
) -> list[dict[str, Any]]:
    """Explicit references (each must resolve, else 400), then aliases named in the prompt."""
    refs: list[dict[str, Any]] = []
    for ref in explicit:
        try:
            image = await find_image(session, project_id, ref, flow_id)
        except ApiError:
            raise ValidationError(
                f"Reference image {ref} does not exist.",
                details={"field": "referenceImages", "value": ref},
            ) from None
        if all(r["imageId"] != image.id for r in refs):
            named = ref if ALIAS_PATTERN.fullmatch(ref) else None
            refs.append({"imageId": image.id, "alias": named})
    for alias in aliases_in_prompt(prompt):
        resolved = await resolve_alias(session, project_id, alias, flow_id)
        if resolved is None or any(r["imageId"] == resolved.image.id for r in refs):
            continue
        refs.append({"imageId": resolved.image.id, "alias": alias})
    if len(refs) > MAX_REFERENCES:
        raise ValidationError(
            f"{len(refs)} reference images after adding aliases from the prompt; "
            f"at most {MAX_REFERENCES} are accepted.",
            field="referenceImages",
        )
    return refs


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
        await _mark_failed(services, generation_id, str(exc), started)
        details = {"generationId": generation_id}
        if isinstance(exc, GeneratorUnavailable):
            raise UpstreamUnavailable(
                f"The image model is unavailable: {exc}", details=details
            ) from None
        raise GenerationFailed(f"The image model failed: {exc}", details=details) from None
    except Exception as exc:
        log.exception("generation %s failed unexpectedly", generation_id)
        await _mark_failed(services, generation_id, "internal error", started)
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
            await _mark_failed(services, generation_id, "the image could not be stored", started)
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


async def load_references(services: Services, generation: Generation) -> list[ReferenceImage]:
    """The bytes of the generation's reference images (deleted ones are left out)."""
    if not generation.referenced_images:
        return []
    refs = []
    async with services.sessions() as session:
        for ref in generation.referenced_images:
            image = await session.get(Image, ref["imageId"])
            if image is None or image.deleted_at is not None:
                continue
            data = await services.store.read(image.storage_key)
            refs.append(ReferenceImage(data, image.mime_type))
    return refs


INTERRUPTED = "interrupted: the process running it stopped before it finished"


def stale_after_s(settings: Settings) -> float:
    """How long a `pending`/`processing` row can go untouched while someone works on it: a run
    is two model calls (enhancement, image), each bounded by GENERATION_TIMEOUT_S, plus one
    more of the same for references, checks and storage."""
    return 3 * settings.generation_timeout_s


async def fail_interrupted(services: Services) -> int:
    """Mark generations whose process died mid-run (SIGKILL, power loss) `failed`, so they do
    not stay `processing` for ever; they can be retried like any failure."""
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_after_s(services.settings))
    async with services.sessions() as session:
        result = await session.execute(
            update(Generation)
            .where(
                Generation.status.in_(("pending", "processing")),
                Generation.updated_at < cutoff,
            )
            .values(status="failed", error_message=INTERRUPTED, updated_at=now)
        )
        await session.commit()
    if result.rowcount:
        log.warning("%d interrupted generation(s) marked failed", result.rowcount)
    return result.rowcount


async def sweep_interrupted(services: Services) -> None:
    """`fail_interrupted` at start and then every half of the stale time (at most a minute)."""
    every = min(60.0, stale_after_s(services.settings) / 2)
    while True:
        try:
            await fail_interrupted(services)
        except Exception:
            log.warning("could not sweep interrupted generations", exc_info=True)
        await asyncio.sleep(every)


async def _mark_failed(
    services: Services, generation_id: str, message: str, started: float
) -> None:
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


async def generation_json(
    session: AsyncSession, generation: Generation, project: ProjectCtx, public_url: str
) -> dict[str, Any]:
    output = None
    if generation.output_image_id:
        image = await session.get(Image, generation.output_image_id)
        if image is not None and image.deleted_at is None:
            output = image_json(image, project, public_url)
    return {
        "id": generation.id,
        "projectId": generation.project_id,
        "flowId": generation.flow_id,
        "status": generation.status,
        "prompt": generation.prompt,
        "originalPrompt": generation.original_prompt,
        "autoEnhance": generation.auto_enhance,
        "aspectRatio": generation.aspect_ratio,
        "enhancementOptions": {"template": generation.template},
        "referencedImages": generation.referenced_images or [],
        "outputImageId": generation.output_image_id,
        "outputImage": output,
        "errorMessage": generation.error_message,
        "retryCount": generation.retry_count,
        "processingTimeMs": generation.processing_time_ms,
        "meta": generation.meta or {},
        "createdAt": iso(generation.created_at),
        "updatedAt": iso(generation.updated_at),
        "deletedAt": iso(generation.deleted_at),
    }
