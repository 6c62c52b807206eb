"""HTTP: /api/bootstrap/initial-key and /api/admin/keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from cache.errors import Forbidden, KeyNotFound, ValidationError
from origin.auth import master_of, services_of
from origin.envelope import iso, ok, optional_int, optional_str, path_uuid, read_json, resource
from origin.keys import CreatedKey, check_slug, create_key, master_key_exists
from origin.models import ApiKey, Organization, Project, utcnow


def created_json(created: CreatedKey) -> dict[str, Any]:
    row = created.row
    return {
        "id": row.id,
        "key": created.secret,
        "type": row.type,
        "organizationSlug": created.organization_slug,
        "projectSlug": created.project_slug,
        "name": row.name,
        "expiresAt": iso(row.expires_at),
        "createdAt": iso(row.created_at),
    }


async def bootstrap(request: Request) -> Response:
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes, required=False)
    name = optional_str(body, "name", 200) or "initial master key"
    async with services.sessions() as session:
        if await master_key_exists(session):
            raise Forbidden("A master key already exists; bootstrap is closed.")
        created = await create_key(session, "master", name=name)
        await session.commit()
    return ok(created_json(created), 201)


async def create(request: Request) -> Response:
    services = services_of(request)
    await master_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    key_type = body.get("type", "project")
    if key_type not in ("project", "master"):
        raise ValidationError("type must be project or master.", field="type")
    org = body.get("organizationSlug")
    project = body.get("projectSlug")
    if key_type == "project" or org is not None:
        org = check_slug(org, "organizationSlug")
    if key_type == "project":
        project = check_slug(project, "projectSlug")
    name = optional_str(body, "name", 200)
    days = optional_int(body, "expiresInDays", None, 1, 3650)
    async with services.sessions() as session:
        created = await create_key(session, key_type, org, project, name, days)
        await session.commit()
    return ok(created_json(created), 201)


async def list_(request: Request) -> Response:
    services = services_of(request)
    await master_of(request)
    async with services.sessions() as session:
        rows = await session.execute(
            select(ApiKey, Organization.slug, Project.slug)
            .outerjoin(Organization, Organization.id == ApiKey.organization_id)
            .outerjoin(Project, Project.id == ApiKey.project_id)
            .order_by(ApiKey.created_at.desc())
        )
        items = [
            {
                "id": key.id,
                "type": key.type,
                "organizationSlug": org,
                "projectSlug": project,
                "name": key.name,
                "expiresAt": iso(key.expires_at),
                "revokedAt": iso(key.revoked_at),
                "createdAt": iso(key.created_at),
            }
            for key, org, project in rows
        ]
    return ok(items)


async def revoke(request: Request) -> Response:
    services = services_of(request)
    await master_of(request)
    key_id = path_uuid(request.path_params["id"], KeyNotFound, "Key")
    async with services.sessions() as session:
        key = await session.get(ApiKey, key_id)
        if key is None:
            raise KeyNotFound("Key not found.")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        await session.commit()
    return ok({"id": key_id})


routes = [
    resource("/api/bootstrap/initial-key", post=bootstrap),
    resource("/api/admin/keys", post=create, get=list_),
    resource("/api/admin/keys/{id}", delete=revoke),
]
