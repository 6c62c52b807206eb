"""The JSON view of a generation row (with its output image's)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from origin.envelope import iso
from origin.images import ProjectCtx, image_json
from origin.models import Generation, Image


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
