"""HTTP: /api/bootstrap/initial-key and /api/admin/keys."""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request
from starlette.responses import Response

from cache.client_ip import TrustedProxies
from cache.errors import Forbidden, KeyNotFound
from cache.invalidation import Invalidation
from cache.settings import Settings
from origin.auth import master_of, services_of
from origin.envelope import Resource, iso, ok, operation, path_uuid
from origin.keys import (
    CreatedKey,
    any_key_exists,
    create_key,
    list_keys,
    lock_keys,
)
from origin.models import ApiKey, utcnow
from origin.schemas import responses
from origin.schemas.requests import BootstrapBody, KeyBody
from origin.schemas.responses import Deleted, KeyOut
from origin.schemas.validation import read_body


def created_json(created: CreatedKey) -> responses.CreatedKey:
    row = created.row
    return responses.CreatedKey(
        id=row.id,
        key=created.secret,
        type=row.type,
        organization_slug=created.organization_slug,
        project_slug=created.project_slug,
        name=row.name,
        expires_at=iso(row.expires_at),
        created_at=iso(row.created_at),
    )


@operation(
    summary="Create the first master key: only while no key exists, from loopback or with the "
    "X-Bootstrap-Token printed at start",
    body=BootstrapBody,
    body_required=False,
    response=responses.CreatedKey,
    status=201,
    auth="none",
)
async def bootstrap(request: Request) -> Response:
    """The first master key, while no key exists, for this machine or the start-up token."""
    services = services_of(request)
    body = await read_body(request, BootstrapBody, required=False)
    name = body.name or "initial master key"
    closed = Forbidden(
        "A key already exists; bootstrap is closed. "
        "Create a master key with `banatie keys create --master`."
    )
    async with services.sessions() as session:
        if await any_key_exists(session):  # the usual answer, given without a lock
            raise closed
        _check_bootstrap_caller(request, services.settings)
        await lock_keys(session)
        if await any_key_exists(session):  # another request minted it meanwhile
            raise closed
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


@operation(
    summary="Create a key", body=KeyBody, response=responses.CreatedKey, status=201, auth="master"
)
async def create(request: Request) -> Response:
    services = services_of(request)
    await master_of(request)
    body = await read_body(request, KeyBody)
    async with services.sessions() as session:
        created = await create_key(
            session,
            body.type,
            body.organization_slug,
            body.project_slug,
            body.name,
            body.expires_in_days,
        )
        await session.commit()
    return ok(created_json(created), 201)


@operation(summary="List keys", response=list[KeyOut], auth="master")
async def list_(request: Request) -> Response:
    services = services_of(request)
    await master_of(request)
    async with services.sessions() as session:
        rows = await list_keys(session)
        items = [
            KeyOut(
                id=key.id,
                type=key.type,
                organization_slug=org,
                project_slug=project,
                name=key.name,
                expires_at=iso(key.expires_at),
                revoked_at=iso(key.revoked_at),
                created_at=iso(key.created_at),
            )
            for key, org, project in rows
        ]
    return ok(items)


@operation(summary="Revoke a key", response=Deleted, auth="master")
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
    return ok(Deleted(id=key_id))


routes = [
    Resource("/api/bootstrap/initial-key", post=bootstrap),
    Resource("/api/admin/keys", post=create, get=list_),
    Resource("/api/admin/keys/{id}", delete=revoke),
]
