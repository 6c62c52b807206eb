"""Prometheus metrics: plain ints on the hot path, metric families built at scrape time.

An L1 hit costs a few microseconds, so nothing on it calls into prometheus_client (a
`Counter.labels(...).inc()` takes a lock and a label lookup per call): requests and bytes are
added to dicts of ints, cache gauges are read from their owners when `/metrics` is scraped, and
a custom collector turns all of it into families. Only the generation-latency histogram is a
prometheus_client object, observed once per paid generation.

One `Metrics` per process, in its own registry (not the global one), so several edges in one
test process never share counts. With uvicorn `--workers N`, each worker counts for itself and a
scrape reaches whichever worker accepts it: run one worker per container and scale out with
replicas (as the L1 wants anyway), or scrape each worker's port. prometheus_client's
multiprocess mode does not apply: it aggregates its own metric objects through files, not
custom collectors.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cache.asgi import ASGIApp, Message, Receive, Scope, Send
from cache.errors import Unauthorized, render_error

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
GENERATION_BUCKETS = (0.5, 1, 2, 4, 8, 15, 30, 60, 120, 240)


def family_of(path: str) -> str:
    """The route family of a path the edge does not serve itself."""
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/internal/"):
        return "internal"
    if path in ("/health", "/ready"):
        return "health"
    return "other"


class Metrics:
    """Counters as plain ints, read by a collector at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (route family, status) → responses
        self.body_bytes: dict[str, int] = {}  # route family → response body bytes sent
        self.hits: dict[str, int] = {"index": 0, "manifest": 0}  # + "l1", read from the L1
        self.misses = 0  # live requests that found their key nowhere
        self.coalesced = 0  # misses answered by a generation another request started
        self._read: dict[str, Callable[[], float]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.generation_seconds = Histogram(
            "banatie_generation_seconds",
            "Time from a live miss to its new image (paid generations only), at the edge.",
            buckets=GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    def read(self, name: str, value: Callable[[], float]) -> None:
        """Read a value at scrape time: `l1_bytes`, `l1_entries`, `l1_evictions`, `l1_hits`,
        `disk_*`, `in_flight` (edge), `origin_in_flight` (origin)."""
        self._read[name] = value

    def responded(self, family: str, status: int, size: int) -> None:
        """One response sent, with `size` body bytes (the edge's own routes call this)."""
        key = (family, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if size:
            self.body_bytes[family] = self.body_bytes.get(family, 0) + size

    def counting(self, send: Send, family: str) -> Send:
        """`send`, counting the response's status and body bytes under `family` (a closure
        per request: ~1.5 µs, three times `responded`; fine for routes off the hot path)."""
        requests, body_bytes = self.requests, self.body_bytes

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.body":
                size = len(message.get("body", b""))
                if size:
                    body_bytes[family] = body_bytes.get(family, 0) + size
            elif message["type"] == "http.response.start":
                key = (family, message["status"])
                requests[key] = requests.get(key, 0) + 1
            await send(message)

        return send_counted

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str) -> float | None:
        read = self._read.get(name)
        return None if read is None else read()


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "banatie_requests", "Responses by route family and status.", labels=["family", "status"]
        )
        for (family, status), count in sorted(m.requests.items()):
            requests.add_metric([family, str(status)], count)
        yield requests
        served = CounterMetricFamily(
            "banatie_response_body_bytes", "Response body bytes sent.", labels=["family"]
        )
        for family, count in sorted(m.body_bytes.items()):
            served.add_metric([family], count)
        yield served
        hits = CounterMetricFamily(
            "banatie_cache_hits",
            "Answers from a cache tier: l1 (in-process, live and img), disk (this host's disk"
            " cache), index (Redis), manifest.",
            labels=["tier"],
        )
        l1_hits = m.value("l1_hits")
        if l1_hits is not None:
            hits.add_metric(["l1"], l1_hits)
        disk_hits = m.value("disk_hits")
        if disk_hits is not None:
            hits.add_metric(["disk"], disk_hits)
        for tier, count in m.hits.items():
            hits.add_metric([tier], count)
        yield hits
        yield CounterMetricFamily(
            "banatie_cache_misses", "Live requests whose key was cached nowhere.", value=m.misses
        )
        yield CounterMetricFamily(
            "banatie_coalesced_waiters",
            "Live misses answered by a generation another request had started.",
            value=m.coalesced,
        )
        for read, name, family_type, documentation in _READ_AT_SCRAPE:
            value = m.value(read)
            if value is not None:
                yield family_type(name, documentation, value=value)


# (read name, metric name, type, help) of the values owners hand over with Metrics.read.
_READ_AT_SCRAPE = (
    ("in_flight", "banatie_generations_in_flight", GaugeMetricFamily,
     "Live keys being produced by this edge."),
    ("l1_bytes", "banatie_l1_bytes", GaugeMetricFamily, "Bytes held by the in-process cache."),
    ("l1_entries", "banatie_l1_entries", GaugeMetricFamily,
     "Responses held by the in-process cache."),
    ("l1_evictions", "banatie_l1_evictions", CounterMetricFamily,
     "In-process cache entries evicted to make room."),
    ("disk_misses", "banatie_disk_cache_misses", CounterMetricFamily,
     "L1 misses this process did not find in the disk cache either."),
    ("disk_bytes", "banatie_disk_cache_bytes", GaugeMetricFamily,
     "Bytes held by this host's disk cache (all its workers)."),
    ("disk_entries", "banatie_disk_cache_entries", GaugeMetricFamily,
     "Responses held by this host's disk cache (all its workers)."),
    ("disk_evictions", "banatie_disk_cache_evictions", CounterMetricFamily,
     "Disk cache entries this process evicted to keep DISK_CACHE_BYTES."),
    ("disk_repairs", "banatie_disk_cache_repairs", CounterMetricFamily,
     "Torn or truncated disk cache files found, removed and not served."),
    ("disk_thread_reads", "banatie_disk_cache_thread_reads", CounterMetricFamily,
     "Disk cache hits read on a thread: the file was not in the page cache."),
    ("disk_file_sends", "banatie_disk_cache_file_sends", CounterMetricFamily,
     "Disk cache hits the fast path sent straight from the file (os.sendfile)."),
    ("origin_in_flight", "banatie_origin_generations_in_flight", GaugeMetricFamily,
     "Generations running at the origin."),
    ("fast_path", "banatie_fast_path_responses", CounterMetricFamily,
     "L1 hits answered by the server protocol's fast path, without the ASGI machinery."),
)  # fmt: skip


async def send_metrics(send: Send, metrics: Metrics, scope: Scope, token: str = "") -> None:
    """The `/metrics` response; with a token (METRICS_TOKEN), only for `Authorization:
    Bearer <token>`, else a 401 envelope."""
    head = scope["method"] == "HEAD"
    if token and not _bearer_matches(scope, token):
        error = Unauthorized(
            "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
        status, headers, body = render_error(error, extra=[(b"x-content-type-options", b"nosniff")])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})
        return
    body = metrics.render()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


def _bearer_matches(scope: Scope, token: str) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.strip().partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(
                given.strip(), token.encode()
            )
    return False


class MetricsEndpoint:
    """In front of an app that has no edge before it (the origin alone): counts its responses
    by route family and answers `GET /metrics`."""

    def __init__(self, app: ASGIApp, metrics: Metrics, token: str = "") -> None:
        self.app = app
        self.metrics = metrics
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
                return await send_metrics(send, self.metrics, scope, self.token)
            send = self.metrics.counting(send, family_of(scope["path"]))
        await self.app(scope, receive, send)
