"""The JSON view of a generation row (with its output image's)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from origin.envelope import iso
from origin.images import ProjectCtx, image_json
from origin.models import Generation, Image
from origin.schemas.responses import Enhancement, GenerationOut, Reference


async def generation_json(
    session: AsyncSession, generation: Generation, project: ProjectCtx, public_url: str
) -> GenerationOut:
    output = None
    if generation.output_image_id:
        image = await session.get(Image, generation.output_image_id)
        if image is not None and image.deleted_at is None:
            output = image_json(image, project, public_url)
    return GenerationOut(
        id=generation.id,
        project_id=generation.project_id,
        flow_id=generation.flow_id,
        status=generation.status,
        prompt=generation.prompt,
        original_prompt=generation.original_prompt,
        auto_enhance=generation.auto_enhance,
        aspect_ratio=generation.aspect_ratio,
        enhancement_options=Enhancement(template=generation.template),
        referenced_images=[
            Reference(image_id=r["imageId"], alias=r.get("alias"))
            for r in generation.referenced_images or []
        ],
        output_image_id=generation.output_image_id,
        output_image=output,
        error_message=generation.error_message,
        retry_count=generation.retry_count,
        processing_time_ms=generation.processing_time_ms,
        meta=generation.meta or {},
        created_at=iso(generation.created_at),
        updated_at=iso(generation.updated_at),
        deleted_at=iso(generation.deleted_at),
    )
