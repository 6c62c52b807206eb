"""Alias rules: project aliases that move, flow aliases, resolution (their format and the
reserved names are the Alias field type's, origin/schemas/fields.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cache.errors import AliasNotFound
from origin.envelope import is_uuid
from origin.models import Flow, Image, utcnow
from origin.schemas.fields import ALIAS_PATTERN
from origin.schemas.fields import TECHNICAL_ALIASES as TECHNICAL

PROMPT_ALIAS = re.compile(rf"(?:^|(?<=\s))({ALIAS_PATTERN.pattern})(?![A-Za-z0-9_-])")


def aliases_in_prompt(prompt: str) -> list[str]:
    """`@name` tokens at the start or after whitespace, in order, without duplicates."""
    seen: list[str] = []
    for match in PROMPT_ALIAS.finditer(prompt):
        if match.group(1) not in seen:
            seen.append(match.group(1))
    return seen


def live_image(project_id: str) -> Select[Image]:
    return select(Image).where(Image.project_id == project_id, Image.deleted_at.is_(None))


async def live_image_by_id(session: AsyncSession, project_id: str, image_id: str) -> Image | None:
    """The project's image `image_id` unless deleted."""
    query = live_image(project_id).where(Image.id == image_id.lower())
    return (await session.execute(query)).scalar_one_or_none()


@dataclass(frozen=True)
class Resolved:
    alias: str
    image: Image
    scope: str  # technical | flow | project
    flow_id: str | None


async def resolve_alias(
    session: AsyncSession, project_id: str, alias: str, flow_id: str | None = None
) -> Resolved | None:
    """Technical → flow → project with a flow; project only without. None when nothing holds it."""
    if flow_id is not None:
        if alias in TECHNICAL:
            query = live_image(project_id).where(Image.flow_id == flow_id)
            if alias == "@upload":
                query = query.where(Image.source == "uploaded").order_by(Image.created_at.desc())
            else:
                query = query.where(Image.source == "generated").order_by(
                    Image.created_at.desc() if alias == "@last" else Image.created_at.asc()
                )
            image = (await session.execute(query.limit(1))).scalar_one_or_none()
            return Resolved(alias, image, "technical", flow_id) if image else None
        flow = await session.get(Flow, flow_id)
        if flow is not None and flow.project_id == project_id and alias in (flow.aliases or {}):
            image = (
                await session.execute(live_image(project_id).where(Image.id == flow.aliases[alias]))
            ).scalar_one_or_none()
            if image is not None:
                return Resolved(alias, image, "flow", flow_id)
    elif alias in TECHNICAL:
        return None
    image = (
        await session.execute(live_image(project_id).where(Image.alias == alias))
    ).scalar_one_or_none()
    return Resolved(alias, image, "project", None) if image else None


async def find_image(
    session: AsyncSession, project_id: str, id_or_alias: str, flow_id: str | None = None
) -> Image:
    """An image by UUID or alias; 404 IMAGE_NOT_FOUND / ALIAS_NOT_FOUND."""
    from cache.errors import ImageNotFound

    if is_uuid(id_or_alias):
        image = (
            await session.execute(live_image(project_id).where(Image.id == id_or_alias.lower()))
        ).scalar_one_or_none()
        if image is None:
            raise ImageNotFound("Image not found.")
        return image
    if not ALIAS_PATTERN.fullmatch(id_or_alias):
        raise ImageNotFound("Image not found.")
    resolved = await resolve_alias(session, project_id, id_or_alias, flow_id)
    if resolved is None:
        raise AliasNotFound(f"No image holds the alias {id_or_alias}.")
    return resolved.image


async def assign_project_alias(
    session: AsyncSession, image: Image, alias: str | None
) -> tuple[str, ...]:
    """Give `image` the project alias, moving it from any image holding it; None clears.
    The aliases that now name another image (or none): tell the edges after the commit."""
    same = image.alias == alias
    changed = () if same else tuple(a for a in (image.alias, alias) if a is not None)
    if alias is not None:  # checked by the request's model (Alias)
        await session.execute(
            update(Image)
            .where(Image.project_id == image.project_id, Image.alias == alias, Image.id != image.id)
            .values(alias=None, updated_at=utcnow())
        )
        await session.flush()
    image.alias = alias
    image.updated_at = utcnow()
    await session.flush()
    return changed


async def set_flow_alias(session: AsyncSession, flow: Flow, alias: str, image_id: str) -> None:
    flow.aliases = {**(flow.aliases or {}), alias: image_id}
    flow.updated_at = utcnow()
    await session.flush()


async def release_image_aliases(session: AsyncSession, image: Image) -> None:
    """A deleted image gives up its project alias and every flow-alias entry pointing at it."""
    image.alias = None
    flows = (
        await session.execute(select(Flow).where(Flow.project_id == image.project_id))
    ).scalars()
    for flow in flows:
        if flow.aliases and image.id in flow.aliases.values():
            flow.aliases = {k: v for k, v in flow.aliases.items() if v != image.id}
            flow.updated_at = utcnow()
    await session.flush()


async def move_image_aliases(session: AsyncSession, old: Image, new: Image) -> None:
    """Regenerate: the project alias and flow-alias entries of `old` now point at `new`."""
    if old.alias:
        alias = old.alias
        old.alias = None
        await session.flush()
        new.alias = alias
    flows = (await session.execute(select(Flow).where(Flow.project_id == old.project_id))).scalars()
    for flow in flows:
        if flow.aliases and old.id in flow.aliases.values():
            flow.aliases = {k: (new.id if v == old.id else v) for k, v in flow.aliases.items()}
            flow.updated_at = utcnow()
    await session.flush()
