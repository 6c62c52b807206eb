"""Who is asking: the project key behind X-API-Key, the project of a /cdn/ URL (and its
signature, where the project wants signed URLs), the client's address. Answers from the
origin are kept for a short while in this process.

`known` answers from what is kept, without waiting (the fast path's question); `resolve` asks
the origin when nothing is kept (the ASGI path's). Both give the same answer for the same
request."""

from __future__ import annotations

import hashlib
import re
import time

from cache.asgi import Message, Send
from cache.client_ip import TrustedProxies
from cache.contract import KeyRef, OriginAPI, ProjectRef
from cache.errors import ProjectNotFound, Unauthorized
from cache.invalidation import Invalidation
from cache.patterns import SLUG_PATTERN
from cache.settings import Settings
from cache.signing import verify as verify_signature
from edge.lru import ExpiringMap
from edge.request import Request, Route

KEY_PATTERN = re.compile(rb"bnt_[0-9a-f]{64}")  # patterns: fullmatch only
NEGATIVE_TTL_S = 5.0
MAX_CACHED_REFS = 10_000


class Callers:
    """Project keys and projects as the origin last described them."""

    def __init__(self, settings: Settings, origin: OriginAPI) -> None:
        self.origin = origin
        ttl = settings.key_cache_ttl_s
        self._negative_ttl_s = min(ttl, NEGATIVE_TTL_S)
        self._keys: ExpiringMap[str, KeyRef] = ExpiringMap(ttl, MAX_CACHED_REFS)
        self._bad_keys: ExpiringMap[str, None] = ExpiringMap(self._negative_ttl_s, MAX_CACHED_REFS)
        self._projects: ExpiringMap[tuple[str, str], ProjectRef | None] = ExpiringMap(
            ttl, MAX_CACHED_REFS
        )
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self.invalidations = 0  # events heard; an answer is kept only if none came meanwhile

    def known(self, route: Route, api_key: bytes | None) -> KeyRef | ProjectRef | None:
        """Who asks for `route`, from what is kept; None when the origin must be asked (or
        the answer is an error)."""
        if route.org is None:
            if api_key is None:
                return None
            found, key_ref = self._keys.get(hashlib.sha256(api_key).hexdigest())
            return key_ref if found else None
        found, project_ref = self._projects.get((route.org, route.project))
        return project_ref if found else None

    async def resolve(self, route: Route, api_key: bytes | None) -> KeyRef | ProjectRef:
        """Who asks for `route`: the key's project (401 without a valid key) or the URL's
        project (404 when there is none)."""
        if route.org is None:
            return await self.authenticate(api_key)
        return await self.project(route.org, route.project)

    async def authenticate(self, api_key: bytes | None) -> KeyRef:
        """The project key behind X-API-Key, from a short-lived in-process cache of hashes."""
        if not api_key:
            raise Unauthorized("An X-API-Key header is required.")
        key_hash = hashlib.sha256(api_key).hexdigest()
        found, ref = self._keys.get(key_hash)
        if found and ref is not None:
            return ref
        if self._bad_keys.get(key_hash)[0] or not KEY_PATTERN.fullmatch(api_key):
            raise Unauthorized("The API key is not valid.")
        seen = self.invalidations
        ref = await self.origin.key(key_hash)
        if ref is None:
            self._bad_keys.set(key_hash, None)
            raise Unauthorized("The API key is not valid.")
        if seen == self.invalidations:  # else it may have been revoked meanwhile
            self._keys.set(key_hash, ref)
        return ref

    async def project(self, org: str, project: str) -> ProjectRef:
        if not SLUG_PATTERN.fullmatch(org) or not SLUG_PATTERN.fullmatch(project):
            raise ProjectNotFound("Project not found.")
        found, ref = self._projects.get((org, project))
        if not found:
            seen = self.invalidations
            ref = await self.origin.project(org, project)
            ttl = None if ref is not None else self._negative_ttl_s
            if seen == self.invalidations:
                self._projects.set((org, project), ref, ttl)
        if ref is None:
            raise ProjectNotFound("Project not found.")
        return ref

    def client_ip(self, request: Request) -> str | None:
        """The socket address, or the first untrusted X-Forwarded-For hop behind our proxies."""
        client = request.scope.get("client") if request.scope is not None else None
        return self._proxies.client_ip(client[0] if client else None, request.forwarded_for)

    def invalidate(self, event: Invalidation, everything: bool) -> None:
        """A project changed (its signing state), a key was revoked: ask the origin again."""
        self.invalidations += 1
        if everything:
            self._projects.clear()
            self._keys.clear()
            return
        if event.project_id is not None:
            pid = event.project_id
            self._projects.drop_where(lambda ref: ref is not None and ref.project_id == pid)
        if event.key_hash is not None:
            self._keys.pop(event.key_hash)


def signed(send: Send, ref: ProjectRef, request: Request) -> Send:
    """Verify the request's signature (403 if unsigned, tampered or expired); for a URL that
    expires, a `send` that keeps shared caches from serving it past its `expires`."""
    assert request.scope is not None
    expires_at = verify_signature(
        ref.signing_secrets, request.scope["path"], request.scope["query_string"]
    )
    if expires_at is None:
        return send
    max_age = f"public, max-age={max(0, expires_at - int(time.time()))}".encode()

    async def send_until_expiry(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, max_age if k == b"cache-control" and v != b"no-store" else v)
                for k, v in message["headers"]
            ]
            message = {**message, "headers": headers}
        await send(message)

    return send_until_expiry
