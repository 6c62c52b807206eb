"""The edge: live images at static-file speed, one paid generation per key.

A raw ASGI callable in front of everything else. Three routes are ours:

    /api/v1/live                          (X-API-Key)
    /cdn/{org}/{project}/live/{scope}     (public)
    /cdn/{org}/{project}/img/{id|@alias}  (public)

and every other request goes to `fallback` (the origin's Starlette app in one process).
A live request reads top to bottom, in `Edge._live`, as:

    parse    the route and query           edge/request.py   live_route_of
    key      who asks → the L1 key         Edge.hit_key      (edge/callers.py for who)
    lookup   L1 → disk → index + storage   edge/tiers.py
    produce  a coalesced miss              Edge._produce     (edge/coalesce.py)
    respond  200 / 304 / 206               edge/responses.py (edge/conditional.py)

The server protocol's fast path (`Edge.fast_hit`) makes the same decision with the same
functions — route, who asks (from what is kept), `hit_key`, the tiers — and stops at the
first step that would have to wait. A hit touches neither Redis, nor storage, nor a thread:
its status, headers and body were prepared when it entered the L1.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from cache.asgi import ASGIApp, Receive, Scope, Send
from cache.contract import KeyRef, LiveParams, LiveResult, OriginAPI, ProjectRef
from cache.errors import (
    ApiError,
    ImageNotFound,
    InternalError,
    MethodNotAllowed,
    NotFound,
    storage_unavailable,
)
from cache.index import Index, LiveRecord
from cache.index.redis import RedisIndex
from cache.invalidation import EVERYTHING, Invalidation, InvalidationBus
from cache.live_key import LiveKey
from cache.metrics import Metrics, family_of, send_metrics
from cache.objects import ObjectNotFound, ObjectStore, StorageUnavailable
from cache.patterns import UUID_PATTERN
from cache.settings import Settings
from edge.callers import MAX_CACHED_REFS, Callers, signed
from edge.coalesce import Coalescer, Locks
from edge.disk_cache import DiskCache, FileBody
from edge.lifespan import lifespan, send_health
from edge.lru import Entry, ExpiringMap, Headers, ResponseCache
from edge.request import LiveQuery, Request, Route, live_route_of
from edge.responses import (
    ALIAS_CACHE_CONTROL,
    CDN_FAMILIES,
    CORS,
    IMMUTABLE,
    ResponseStarted,
    file_answer,
    make_entry,
    send_entry,
    send_error,
    send_preflight,
    server_timing,
    stream,
    wire_answer,
    with_cache_control,
)
from edge.tiers import Stored, Tiers
from edge.variant_cache import VARY_ACCEPT, VariantCache
from edge.variants import Want

log = logging.getLogger("banatie.edge")

ALIAS_TTL_S = 60.0
IMAGE_TTL_S = 300.0
MEMO_QUERIES = 4096  # parsed URLs kept, each at most MEMO_QUERY_BYTES long
MEMO_QUERY_BYTES = 2048
GET_HEAD = {"Allow": "GET, HEAD"}

Source = Callable[[], Awaitable[tuple[LiveRecord, Headers]]]  # a variant's original + MISS headers


class Edge:
    """The edge ASGI app; `fallback` serves every path that is not a live or CDN route."""

    def __init__(
        self,
        settings: Settings,
        origin: OriginAPI,
        store: ObjectStore,
        index: Index,
        bus: InvalidationBus,
        fallback: ASGIApp | None = None,
        *,
        metrics: Metrics | None = None,
        disk: DiskCache | None = None,
    ) -> None:
        self.settings = settings
        self.origin = origin
        self.store = store
        self.index = index
        self.bus = bus
        self.fallback = fallback
        self.metrics = metrics if metrics is not None else Metrics()
        self.l1 = ResponseCache(settings.l1_bytes, settings.l1_max_entry_bytes)
        self.disk = disk  # between the L1 and the index + storage; None: no disk tier
        self.tiers = Tiers(self.l1, disk)
        self.stored = Stored(index, store, self.metrics)
        self.callers = Callers(settings, origin)
        self.coalescer: Coalescer[LiveResult] = Coalescer(
            max_concurrent=settings.max_concurrent_generations,
            # Prompt enhancement and the image call are each bounded by the generation timeout.
            timeout_s=2 * settings.generation_timeout_s,
            failure_ttl_s=settings.failure_ttl_s,
            locks=index if isinstance(index, Locks) else None,
            lease_ms=settings.lock_lease_ms,
        )
        self._images: ExpiringMap[tuple[str, str], LiveRecord] = ExpiringMap(
            IMAGE_TTL_S, MAX_CACHED_REFS
        )
        self.variants = VariantCache(settings, store, index)
        # What a URL means (route, scope, parsed query, variant) is remembered per URL; who
        # may see it (the key or project, signing) is checked on every request.
        self._routes = functools.lru_cache(maxsize=MEMO_QUERIES)(self._route_of)
        self._fast_routes = functools.lru_cache(maxsize=MEMO_QUERIES)(self._fast_route_of)
        self.fast_answers = 0  # responses given by fast_hit
        self.invalidations = 0  # events heard; a lookup caches its answer only if none came
        bus.subscribe(self._invalidate)
        for name, read in (
            ("l1_hits", lambda: self.l1.hits),
            ("l1_bytes", lambda: self.l1.bytes),
            ("l1_entries", lambda: len(self.l1)),
            ("l1_evictions", lambda: self.l1.evictions),
            ("in_flight", lambda: self.coalescer.in_flight),
            ("fast_path", lambda: self.fast_answers),
        ):
            self.metrics.read(name, read)
        if disk is not None:
            for name, read in (
                ("disk_hits", lambda: disk.hits),
                ("disk_misses", lambda: disk.misses),
                ("disk_bytes", lambda: disk.bytes),
                ("disk_entries", lambda: disk.entries),
                ("disk_evictions", lambda: disk.evictions),
                ("disk_repairs", lambda: disk.repairs),
                ("disk_thread_reads", lambda: disk.thread_reads),
                ("disk_file_sends", lambda: disk.file_sends),
            ):
                self.metrics.read(name, read)

    # -- the hit decision: one for both paths -------------------------------------------------

    def hit_key(self, route: Route, project_id: str, request: Request) -> tuple[LiveKey, str]:
        """A live request's key for the project asking, and its L1 key (the variant the
        Accept header settles, for a variant)."""
        key = route.key
        if key is None or key.project_id != project_id:
            key = route.key = self._live_key(project_id, route.scope, route.query)
            route.canonical = key.canonical
        if route.variant is None:
            return key, route.canonical
        return key, self.variants.want(route.variant, request.headers).l1_key(route.canonical)

    def fast_hit(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, bytes | FileBody] | None:
        """A live URL whose response is in L1 (or on disk, in the page cache), answered
        without the ASGI machinery: the server's protocol calls this as soon as a request's
        headers are read and, given (status, header lines, body), writes them itself. None
        means "not that simple" (not a live route, not cached, a Range, a signed project, an
        unknown key, anything to report): the request then takes the ASGI path, which
        answers every case. Nothing here awaits; the steps are the ASGI path's own, so every
        answer is the one that path would give for the same request."""
        if method != b"GET" and method != b"HEAD":
            return None
        route = self._fast_routes(url) if len(url) <= MEMO_QUERY_BYTES else self._fast_route_of(url)
        if route is None or route.variant_error is not None:
            return None
        request = Request.read("GET" if method == b"GET" else "HEAD", headers)
        if request.range is not None:
            return None
        ref = self.callers.known(route, request.api_key)
        if ref is None or (isinstance(ref, ProjectRef) and ref.require_signed):
            return None
        found = self.tiers.peek(self.hit_key(route, ref.project_id, request)[1])
        if found is None:
            return None
        self.fast_answers += 1
        request.family = route.family
        if isinstance(found, Entry):
            return wire_answer(request, found, self.metrics)
        return file_answer(request, *found, self.metrics)

    def _fast_route_of(self, url: bytes) -> Route | None:
        """The live route of a raw request target, or None (another route, or a request the
        ASGI path must answer: bad parameters, percent-encoded path, anything unusual)."""
        if b"#" in url:  # a fragment: let uvicorn's URL parser decide what the query is
            return None
        path, _, query = url.partition(b"?")
        if b"%" in path:
            return None
        try:
            return live_route_of(path.decode("latin-1"), query, self.variants.parse)
        except ApiError:
            return None

    def _route_of(self, path: str, query: bytes) -> Route | None:
        return live_route_of(path, query, self.variants.parse)

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/api/v1/live":
                request = Request.from_scope(scope)
                request.family = "live"
                return await self._guarded(self._live, request, send)
            if path.startswith("/cdn/"):
                parts = path.split("/")  # "", "cdn", org, project, kind, ref
                if len(parts) == 6 and parts[4] in ("live", "img"):
                    live = parts[4] == "live"
                    request = Request.from_scope(scope)
                    request.family = "cdn_live" if live else "cdn_img"
                    return await self._guarded(self._live if live else self._image, request, send)
            if path == "/metrics" and scope["method"] in ("GET", "HEAD"):
                return await send_metrics(send, self.metrics, scope, self.settings.metrics_token)
            if path == "/metrics":
                error: ApiError = MethodNotAllowed(
                    "Only GET and HEAD are allowed here.", headers=GET_HEAD
                )
                return await self._send_error(send, Request.from_scope(scope), error)
            send = self.metrics.counting(send, family_of(path))
        elif scope["type"] == "lifespan":
            return await lifespan(scope, receive, send, self.startup, self.shutdown, self.fallback)
        if self.fallback is not None:
            return await self.fallback(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == "/health":
            return await send_health(send)
        if scope["type"] == "http":
            error = NotFound("No route matches this path.")
            return await self._send_error(send, Request.from_scope(scope), error)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _guarded(
        self, route: Callable[[Request, Send], Awaitable[None]], request: Request, send: Send
    ) -> None:
        """Run a route; every failure becomes an error envelope, never a trace."""
        try:
            if request.method not in ("GET", "HEAD"):
                if request.family not in CDN_FAMILIES:
                    raise MethodNotAllowed("Only GET and HEAD are allowed here.", headers=GET_HEAD)
                if request.method == "OPTIONS":
                    return await send_preflight(send, request, self.metrics)
                raise MethodNotAllowed(
                    "Only GET, HEAD and OPTIONS are allowed here.",
                    headers={"Allow": "GET, HEAD, OPTIONS"},
                )
            await route(request, send)
        except ResponseStarted:
            return
        except ApiError as e:
            await self._send_error(send, request, e)
        except StorageUnavailable as e:
            log.warning("storage unavailable: %s", e)
            await self._send_error(send, request, storage_unavailable())
        except Exception:
            assert request.scope is not None
            log.exception("edge request failed: %s %s", request.method, request.scope["path"])
            await self._send_error(send, request, InternalError("Internal error."))

    async def _send_error(self, send: Send, request: Request, error: ApiError) -> None:
        await send_error(send, request, error, self.metrics, self.settings.error_images)

    # -- the live pipeline: parse → key → lookup → produce → respond --------------------------

    async def _live(self, request: Request, send: Send) -> None:
        """/api/v1/live and /cdn/{org}/{project}/live/{scope}."""
        route = await self._parse(request)
        ref = self.callers.known(route, request.api_key) or await self.callers.resolve(
            route, request.api_key
        )
        if isinstance(ref, ProjectRef) and ref.require_signed:
            send = signed(send, ref, request)  # hits too: the signature is never in the key
        if route.variant_error is not None:  # remembered with its URL: a fresh traceback
            raise route.variant_error.with_traceback(None)
        key, l1_key = self.hit_key(route, ref.project_id, request)
        entry = await self.tiers.get(l1_key)
        if entry is None:
            if route.variant is None:
                entry = await self._original(request, send, route, key, ref)
            else:
                entry = await self._live_variant(request, route, key, ref, l1_key)
            if entry is None:
                return  # streamed: too large to keep
        await send_entry(send, request, entry, self.metrics)

    async def _parse(self, request: Request) -> Route:
        """The live route of the request; a malformed one is a 400 (after the 401 of a
        missing or bad API key on /api/v1/live)."""
        assert request.scope is not None
        path, query = request.scope["path"], request.scope["query_string"]
        try:
            route = self._routes(path, query) if len(query) <= MEMO_QUERY_BYTES else None
            route = route or self._route_of(path, query)
        except ApiError:
            if request.family == "live":
                await self.callers.authenticate(request.api_key)
            raise
        assert route is not None  # __call__ sends only live paths here
        return route

    def _live_key(self, project_id: str, scope: str, query: LiveQuery) -> LiveKey:
        # The prompt is already normalised (live_key would do it again).
        return LiveKey(
            project_id,
            scope,
            query.prompt,
            query.aspect_ratio,
            query.auto_enhance,
            query.template,
            self.origin.model,
        )

    async def _original(
        self, request: Request, send: Send, route: Route, key: LiveKey, ref: KeyRef | ProjectRef
    ) -> Entry | None:
        """A live image not in the L1 or on disk: from the index + storage, else produced.
        None when it was streamed (too large to keep)."""
        canonical, digest = key.canonical, key.digest
        org, project = ref.organization_slug, ref.project_slug
        extra = _route_headers(route)
        seen = self.invalidations
        record = await self.stored.shared_lookup(digest, canonical, org, project)
        if record is not None:
            entry = await self._load(record, b"HIT", extra)
            if entry is not None:
                if seen == self.invalidations:  # else the image may be gone by now
                    self.tiers.keep(canonical, entry)
                return entry
            if not self.tiers.holds(record.size):
                await self._stream(send, request, record, b"HIT", extra)
                return None
            # The record points at bytes that are gone: regenerate through the origin.

        if request.head:
            raise ImageNotFound("This image is not cached; HEAD never starts a generation.")

        started = time.perf_counter()
        result, ran = await self._produce(key, org, project, self._params(request, route, ref))
        record = result.record
        status = b"MISS" if result.created else b"HIT"
        headers = list(extra)
        if result.created and record.generation_id:
            headers.append((b"x-generation-id", record.generation_id.encode()))
        if ran:
            headers += [(k.lower().encode(), v.encode()) for k, v in result.rate_headers.items()]
            if result.model_ms is not None:
                headers.append(server_timing(result.model_ms, time.perf_counter() - started))
        # Waiters of one generation resume one after another: the first fills L1 for the rest.
        held = self.l1.get(canonical) if record.canonical == canonical else None
        cached = held
        if cached is None and result.body is not None and len(result.body) == record.size:
            cached = make_entry(record, result.body, b"HIT", IMMUTABLE, extra)  # in-process
        if cached is None:
            cached = await self._load(record, b"HIT", extra)
        if cached is None:
            if self.tiers.holds(record.size):
                raise ImageNotFound("The generated image is no longer available.")
            await self._stream(send, request, record, status, headers)
            return None
        if record.canonical == canonical:
            if held is None:
                self.tiers.keep(canonical, cached)
        else:
            log.warning("origin answered a record for another key (model changed?): %s", digest)
        return make_entry(record, cached.body, status, IMMUTABLE, headers)

    async def _live_variant(
        self, request: Request, route: Route, key: LiveKey, ref: KeyRef | ProjectRef, l1_key: str
    ) -> Entry:
        """A variant of a live image; its original generated once under its own live key."""
        assert route.variant is not None
        org, project = ref.organization_slug, ref.project_slug
        params = self._params(request, route, ref)

        async def source() -> tuple[LiveRecord, Headers]:
            record = await self.stored.lookup(key.digest, key.canonical, org, project)
            if record is not None:
                return record, []
            if request.head:
                raise ImageNotFound("This image is not cached; HEAD never starts a generation.")
            result, ran = await self._produce(key, org, project, params)
            miss: Headers = []
            if result.created and result.record.generation_id:
                miss.append((b"x-generation-id", result.record.generation_id.encode()))
            if ran:
                miss += [(k.lower().encode(), v.encode()) for k, v in result.rate_headers.items()]
            return result.record, miss

        wanted = self.variants.want(route.variant, request.headers)
        return await self._variant(
            wanted, key.canonical, l1_key, ref.project_id, org, project, source,
            _route_headers(route),
        )  # fmt: skip

    def _params(
        self, request: Request, route: Route, ref: KeyRef | ProjectRef
    ) -> Callable[[], LiveParams]:
        """What the origin needs to generate the route's image, made only if it must."""

        def params() -> LiveParams:
            if isinstance(ref, KeyRef):
                return _live_params(ref, route.scope, route.query, key_id=ref.key_id)
            client_ip = self.callers.client_ip(request)
            return _live_params(ref, route.scope, route.query, client_ip=client_ip)

        return params

    async def _produce(
        self, key: LiveKey, org: str, project: str, params: Callable[[], LiveParams]
    ) -> tuple[LiveResult, bool]:
        """A coalesced miss; `ran` says whether this request's own call reached the origin."""
        canonical, digest = key.canonical, key.digest
        ran = False
        self.metrics.misses += 1

        async def generate() -> LiveResult:
            nonlocal ran
            ran = True
            started = time.monotonic()
            result = await self.origin.live(params())
            if result.created:
                self.metrics.generation_seconds.observe(time.monotonic() - started)
            if result.record.canonical == canonical:
                await self.stored.remember(digest, result.record)
            return result

        async def produced_elsewhere() -> LiveResult | None:
            record = await self.stored.lookup(digest, canonical, org, project, tally=False)
            return None if record is None else LiveResult(record, False, {})

        result = await self.coalescer.run(digest, generate, produced_elsewhere)
        if not ran:
            self.metrics.coalesced += 1
        return result, ran

    async def _variant(
        self,
        wanted: Want,
        source_key: str,
        l1_key: str,
        project_id: str,
        org: str,
        project: str,
        source: Source,
        extra: Headers,
    ) -> Entry:
        """A resized/re-encoded image (?w=&h=&fit=&format=&q=&dpr=) not in the L1 or on disk,
        derived from the original (`source`: its record, and what a MISS of it adds)."""
        seen = self.invalidations
        record, miss = await source()

        async def original() -> bytes:
            cached = await self.tiers.get(source_key)
            if cached is not None:
                return cached.body
            try:
                return await self.store.read(record.object_key)
            except ObjectNotFound:
                raise ImageNotFound("The image is no longer available.") from None

        variant = await self.variants.get(project_id, org, project, record, wanted, original)
        found = replace(variant.record, image_id=record.image_id)
        headers = extra + VARY_ACCEPT if wanted.vary else extra
        entry = make_entry(found, variant.body, b"HIT", IMMUTABLE, headers)
        if seen == self.invalidations:  # else the source may be gone by now
            self.tiers.keep(l1_key, entry)
        if variant.made or miss:
            entry = make_entry(found, variant.body, b"MISS", IMMUTABLE, headers + miss)
        return entry

    async def _load(self, record: LiveRecord, status: bytes, extra: Headers) -> Entry | None:
        """The record as an entry (None: too large to keep, or its bytes are gone)."""
        if not self.tiers.holds(record.size):
            return None
        return await self.stored.load(record, status, extra)

    async def _stream(
        self,
        send: Send,
        request: Request,
        record: LiveRecord,
        status: bytes,
        extra: Headers,
        cache_control: bytes = IMMUTABLE,
    ) -> None:
        await stream(send, request, self.store, self.metrics, record, status, extra, cache_control)

    # -- /cdn/{org}/{project}/img/{id|@alias} ----------------------------------------------------

    async def _image(self, request: Request, send: Send) -> None:
        assert request.scope is not None
        _, _, org, project, _, ref = request.scope["path"].split("/")
        is_alias = ref.startswith("@")
        if not is_alias and not UUID_PATTERN.fullmatch(ref):
            raise ImageNotFound("Image not found.")
        project_ref = await self.callers.project(org, project)
        project_id = project_ref.project_id
        cache_key = (project_id, ref if is_alias else ref.lower())
        seen = self.invalidations  # a delete or move heard meanwhile: cache nothing found
        found, record = self._images.get(cache_key)
        if not found or record is None:
            record = await self.origin.image(project_id, ref)
            if seen == self.invalidations:
                self._images.set(cache_key, record, ALIAS_TTL_S if is_alias else None)
        cache_control = ALIAS_CACHE_CONTROL if is_alias else IMMUTABLE
        source_key = "img\x1f" + record.image_id
        spec = self.variants.parse(request.scope["query_string"])
        entry: Entry | None
        if spec is not None:
            wanted = self.variants.want(spec, request.headers)
            l1_key = wanted.l1_key(source_key)
            entry = await self.tiers.get(l1_key) or await self._variant(
                wanted, source_key, l1_key, project_id, org, project, _known(record), CORS
            )
        else:
            entry = await self.tiers.get(source_key)
            if entry is None:
                if not self.tiers.holds(record.size):
                    return await self._stream(send, request, record, b"HIT", CORS, cache_control)
                entry = await self._load(record, b"HIT", CORS)
                if entry is None:
                    self._images.pop(cache_key)
                    raise ImageNotFound("Image not found.")
                if seen == self.invalidations:
                    self.tiers.keep(source_key, entry)
        if cache_control != IMMUTABLE:
            entry = with_cache_control(entry, cache_control)
        await send_entry(send, request, entry, self.metrics)

    # -- invalidation and lifespan ------------------------------------------------------------

    def _invalidate(self, event: Invalidation) -> None:
        """An image is gone: drop its L1 and disk entries and the records that point at it.
        A project changed (its signing state), a key was revoked, an alias moved: read them
        from the origin again."""
        self.invalidations += 1  # what a lookup started before now found may be stale
        everything = event.image_id == EVERYTHING  # the bus may have missed some
        self.callers.invalidate(event, everything)
        for alias_key in event.aliases:
            self._images.pop(alias_key)
        if everything:
            self.tiers.clear()
            self._images.clear()
            return
        if not event.image_id:
            return
        self.tiers.drop_image(event.image_id)
        self._images.drop_where(lambda record: record.image_id == event.image_id)

    async def startup(self) -> None:
        start = getattr(self.origin, "start", None)
        if start is not None:
            await start()
        await self.start_disk()
        await self.bus.start()

    async def start_disk(self) -> None:
        """Start the disk tier; with the invalidation log in Redis, it first catches up with
        the deletes it missed while this edge was down."""
        if self.disk is not None:
            subscribed = getattr(self.bus, "subscribed", None)
            redis = self.index.client if isinstance(self.index, RedisIndex) else None
            await self.disk.start(redis, subscribed.is_set if subscribed is not None else None)

    async def shutdown(self) -> None:
        await self.bus.close()
        self.variants.close()
        if self.disk is not None:
            await self.disk.close()


def _route_headers(route: Route) -> Headers:
    """What every answer of a live route adds: the scope and CORS on /cdn/ URLs."""
    if route.org is None:
        return []
    return [(b"x-scope", route.scope.encode()), *CORS]


def _live_params(
    ref: KeyRef | ProjectRef,
    scope: str,
    query: LiveQuery,
    key_id: str | None = None,
    client_ip: str | None = None,
) -> LiveParams:
    return LiveParams(
        project_id=ref.project_id,
        organization_slug=ref.organization_slug,
        project_slug=ref.project_slug,
        scope=scope,
        prompt=query.prompt,
        aspect_ratio=query.aspect_ratio,
        auto_enhance=query.auto_enhance,
        template=query.template,
        key_id=key_id,
        client_ip=client_ip,
    )


def _known(record: LiveRecord) -> Source:
    async def source() -> tuple[LiveRecord, Headers]:
        return record, []

    return source


create_edge = Edge  # the factory name the process layouts and tests use
