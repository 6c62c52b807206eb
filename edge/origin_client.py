"""OriginAPI over HTTP: what an edge in its own process calls on the origin.

Every call sends `Authorization: Bearer <SERVICE_TOKEN>` to `ORIGIN_URL`. The origin's
internal routes answer with these exact JSON shapes (dataclass field names, snake_case):

    GET  /internal/info
         200 {"model": "<model identity, part of every live cache key>"}

    GET  /internal/keys/{sha256 hex of the X-API-Key}
         200 {"key_id": str, "project_id": str, "organization_slug": str, "project_slug": str}
         404 error envelope (unknown, revoked, expired or master key)

    GET  /internal/projects/{organization_slug}/{project_slug}
         200 {"project_id": str, "organization_slug": str, "project_slug": str,
              "require_signed": bool, "signing_secrets": [str, ...]}
              (the secrets that verify the project's signed live URLs, current first;
               both fields may be absent from an older origin: false and [])
         404 error envelope

    POST /internal/live
         body {"project_id": str, "organization_slug": str, "project_slug": str,
               "scope": str, "prompt": str, "aspect_ratio": str, "auto_enhance": bool,
               "template": str, "key_id": str | null, "client_ip": str | null}
         200 {"record": {"image_id": str, "generation_id": str | null, "object_key": str,
                         "content_type": str, "size": int, "etag": str, "canonical": str},
              "created": bool,
              "rateHeaders": {"X-RateLimit-Limit": "...", ...},
              "modelMs": float | null}   (a generation's wait on the model; may be absent)
         4xx/5xx error envelope {"success": false, "error": {"code", "message", "details"?}}
              (Retry-After and X-RateLimit-* passed through)

    GET  /internal/images/{project_id}/{image id or @alias}
         200 {"image_id": ..., "generation_id": ..., "object_key": ..., "content_type": ...,
              "size": ..., "etag": ..., "canonical": "",
              "focal_point": [x, y] | null}   (the LiveRecord fields)
         404 error envelope (IMAGE_NOT_FOUND / ALIAS_NOT_FOUND)

camelCase field names (keyId, projectId, imageId, ...) are accepted too. The origin cannot be
reached → UpstreamUnavailable (503, Retry-After); `POST /internal/live` timing out → 504.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from cache.contract import KeyRef, LiveParams, LiveResult, ProjectRef
from cache.errors import (
    ApiError,
    GatewayTimeout,
    UpstreamUnavailable,
    error_from_envelope,
)
from cache.index import LiveRecord
from cache.settings import Settings

log = logging.getLogger("banatie.edge.origin")

RETRY_AFTER_S = 5
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class HttpOrigin:
    """OriginAPI over the origin's `/internal` routes."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._client = httpx.AsyncClient(
            base_url=settings.origin_url,
            headers={"Authorization": f"Bearer {settings.service_token}"},
            timeout=httpx.Timeout(10.0, connect=2.0),
            # Idle connections are dropped well before uvicorn's 5 s keep-alive closes them,
            # so a request is never written onto a connection the origin is closing.
            limits=httpx.Limits(
                max_connections=256, max_keepalive_connections=64, keepalive_expiry=2.0
            ),
            transport=transport,
        )
        # Longer than the edge's own wait (2 x the generation timeout), which answers 504 first.
        self._live_timeout = httpx.Timeout(2 * settings.generation_timeout_s + 10.0, connect=2.0)
        self._model: str | None = None
        self._model_checked_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        """The origin's model identity, fetched at start (and retried while unknown)."""
        if self._model is None:
            now = time.monotonic()
            if now - self._model_checked_at > 1.0:
                self._model_checked_at = now
                self._refreshing = asyncio.get_running_loop().create_task(self._refresh_model())
            raise UpstreamUnavailable("The origin has not answered yet.", retry_after=1)
        return self._model

    async def start(self) -> None:
        """Learn the model identity; an origin that is down now is retried on first use."""
        await self._refresh_model()

    async def close(self) -> None:
        await self._client.aclose()

    async def key(self, key_hash: str) -> KeyRef | None:
        data = await self._get(f"/internal/keys/{quote(key_hash, safe='')}", missing_ok=True)
        return None if data is None else KeyRef(**_fields(data, KeyRef))

    async def project(self, organization_slug: str, project_slug: str) -> ProjectRef | None:
        path = (
            f"/internal/projects/{quote(organization_slug, safe='')}/{quote(project_slug, safe='')}"
        )
        data = await self._get(path, missing_ok=True)
        if data is None:
            return None
        fields = _fields(data, ProjectRef)
        secrets = fields["signing_secrets"]
        if not isinstance(secrets, list | tuple) or not all(isinstance(s, str) for s in secrets):
            raise UpstreamUnavailable("The origin answered bad signing secrets.", RETRY_AFTER_S)
        fields["signing_secrets"] = tuple(secrets)
        fields["require_signed"] = fields["require_signed"] is True
        return ProjectRef(**fields)

    async def live(self, params: LiveParams) -> LiveResult:
        try:
            response = await _once_more_if_dropped(
                lambda: self._client.post(
                    "/internal/live", json=params.to_dict(), timeout=self._live_timeout
                )
            )
        except httpx.TimeoutException:
            raise GatewayTimeout("The origin did not finish the image in time.") from None
        except httpx.TransportError as e:
            raise _unreachable(e) from None
        data = _payload(response)
        try:
            return LiveResult(
                record=LiveRecord(**_fields(data["record"], LiveRecord)),
                created=bool(data.get("created", False)),
                rate_headers={str(k): str(v) for k, v in (data.get("rateHeaders") or {}).items()},
                model_ms=float(data["modelMs"]) if data.get("modelMs") is not None else None,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise UpstreamUnavailable(f"The origin answered an unexpected shape: {e}") from None

    async def image(self, project_id: str, ref: str) -> LiveRecord:
        path = f"/internal/images/{quote(project_id, safe='')}/{quote(ref, safe='@')}"
        data = await self._get(path, missing_ok=False)
        assert data is not None
        return LiveRecord(**_fields(data, LiveRecord))

    # -- plumbing ---------------------------------------------------------------------------

    async def _refresh_model(self) -> None:
        try:
            data = await self._get("/internal/info", missing_ok=False)
            self._model = str((data or {})["model"])
        except (ApiError, KeyError, TypeError) as e:
            log.warning("cannot learn the origin's model yet: %s", e)

    async def _get(self, path: str, missing_ok: bool) -> dict[str, Any] | None:
        try:
            response = await _once_more_if_dropped(lambda: self._client.get(path))
        except httpx.TransportError as e:
            raise _unreachable(e) from None
        if missing_ok and response.status_code == 404:
            return None
        return _payload(response)


async def _once_more_if_dropped(
    call: Callable[[], Awaitable[httpx.Response]],
) -> httpx.Response:
    """Retry once when a pooled connection was closed under the request. Safe: every call is
    a read, or the live call, which the origin answers once per cache key."""
    try:
        return await call()
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        return await call()


def _unreachable(error: Exception) -> UpstreamUnavailable:
    log.warning("origin unreachable: %s", error)
    return UpstreamUnavailable("The origin is unavailable; try again shortly.", RETRY_AFTER_S)


def _payload(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; any other answer becomes the ApiError it carries."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success and isinstance(data, dict):
        return data
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        raise error_from_envelope(response.status_code, data, dict(response.headers))
    raise UpstreamUnavailable(
        f"The origin answered {response.status_code} without an error envelope.", RETRY_AFTER_S
    )


def _fields(data: Any, cls: type) -> dict[str, Any]:
    """`data`'s values for the dataclass `cls`, accepting snake_case or camelCase names."""
    if not isinstance(data, dict):
        raise UpstreamUnavailable("The origin answered an unexpected shape.", RETRY_AFTER_S)
    snake = {_CAMEL.sub("_", k).lower(): v for k, v in data.items()}
    values = {**_OPTIONAL, **snake}
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [name for name in names if name not in values]
    if missing:
        raise UpstreamUnavailable(f"The origin answered without {missing[0]}.", RETRY_AFTER_S)
    return {name: values[name] for name in names}


# Fields the origin may leave out: an uploaded image has no generation, an image by id no key,
# an origin older than signed URLs no signing state.
_OPTIONAL: dict[str, Any] = {
    "generation_id": None,
    "canonical": "",
    "focal_point": None,
    "require_signed": False,
    "signing_secrets": (),
}
