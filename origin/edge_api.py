"""The origin side of the edge contract, as in-process calls (origin/routes/internal.py serves
the same over HTTP to separate edge processes)."""

from __future__ import annotations

from cache.contract import KeyRef, LiveParams, LiveResult, ProjectRef
from cache.errors import NotFound, Unauthorized
from cache.index import LiveRecord
from origin import live as live_call
from origin.aliases import find_image
from origin.images import image_record
from origin.keys import principal_by_hash
from origin.projects import find_project
from origin.services import Services
from origin.signing import active_secrets


class InProcessOrigin:
    """What the edge asks, answered by direct calls (one-process mode)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.model = services.generator.model

    async def key(self, key_hash: str) -> KeyRef | None:
        """The project key hashing to `key_hash`, if it is valid (master keys serve nothing)."""
        async with self.services.sessions() as session:
            try:
                found = await principal_by_hash(session, key_hash)
            except Unauthorized:
                return None
        if found.type != "project" or found.project_id is None:
            return None
        assert found.organization_slug and found.project_slug
        return KeyRef(found.key_id, found.project_id, found.organization_slug, found.project_slug)

    async def project(self, organization_slug: str, project_slug: str) -> ProjectRef | None:
        async with self.services.sessions() as session:
            try:
                project = await find_project(session, organization_slug, project_slug)
            except NotFound:
                return None
        return ProjectRef(
            project.id,
            organization_slug,
            project_slug,
            project.require_signed_urls,
            active_secrets(project),
        )

    async def live(self, params: LiveParams) -> LiveResult:
        return await live_call.live(self.services, params)

    async def image(self, project_id: str, ref: str) -> LiveRecord:
        async with self.services.sessions() as session:
            return image_record(await find_image(session, project_id, ref))
