"""A generation's reference images: which ones (explicit and named in the prompt), and their
bytes when the model runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import ApiError, ValidationError
from origin.aliases import ALIAS_PATTERN, aliases_in_prompt, find_image, resolve_alias
from origin.generators import ReferenceImage
from origin.models import Generation, Image
from origin.schemas.fields import MAX_REFERENCES
from origin.services import Services


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
