"""HTTP: /api/bootstrap/initial-key and /api/admin/keys."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cache.client_ip import TrustedProxies
from cache.errors import Forbidden, KeyNotFound, ValidationError
from cache.invalidation import Invalidation
from cache.settings import Settings
from origin.auth import master_of, services_of
from origin.envelope import iso, ok, optional_int, optional_str, path_uuid, read_json, resource
from origin.keys import CreatedKey, any_key_exists, check_slug, create_key, list_keys
from origin.models import ApiKey, utcnow


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
    """The first master key, while no key exists, for this machine or the start-up token."""
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes, required=False)
    name = optional_str(body, "name", 200) or "initial master key"
    async with services.sessions() as session:
        if await any_key_exists(session):
            raise Forbidden(
                "A key already exists; bootstrap is closed. "
                "Create a master key with `banatie keys create --master`."
            )
        _check_bootstrap_caller(request, services.settings)
        created = await create_key(session, "master", name=name)
        await session.commit()
    return ok(created_json(created), 201)


def _check_bootstrap_caller(request: Request, settings: Settings) -> None:
    """The token printed at start, or a loopback client when no token is sent."""
    sent = request.headers.get("x-bootstrap-token")
    if sent is not None:
        token = settings.bootstrap_token
        if not token or not hmac.compare_digest(sent.encode(), token.encode()):
            raise Forbidden("The X-Bootstrap-Token does not match the one printed at start.")
        return
    if not _from_this_machine(request, settings):
        raise Forbidden(
            "Bootstrap is open to this machine only (loopback), or with the "
            "X-Bootstrap-Token header printed in the server log at start."
        )


def _from_this_machine(request: Request, settings: Settings) -> bool:
    """The peer is a loopback address, and so is the client a trusted proxy there names."""
    proxies = TrustedProxies(settings.trusted_proxies)
    peer = request.client.host if request.client else None
    forwarded = request.headers.getlist("x-forwarded-for")
    relayed = bool(forwarded) or any(name in request.headers for name in ("forwarded", "x-real-ip"))
    if relayed and not (peer is not None and proxies.trusts(peer)):
        return False  # a proxy we were not told about makes every client look local
    client = proxies.client_ip(peer, ",".join(forwarded).encode("latin-1") if forwarded else None)
    # Behind a proxy on another host, "127.0.0.1" would be that host: never this machine.
    return _is_loopback(peer) and _is_loopback(client)


def _is_loopback(address: str | None) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (a dual-stack socket's peer)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


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
        rows = await list_keys(session)
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
        key_hash = key.key_hash
        await session.commit()
    # Every edge forgets the key now, not when its key cache expires.
    await services.bus.publish(Invalidation("", key_hash=key_hash))
    return ok({"id": key_id})


routes = [
    resource("/api/bootstrap/initial-key", post=bootstrap),
    resource("/api/admin/keys", post=create, get=list_),
    resource("/api/admin/keys/{id}", delete=revoke),
]
