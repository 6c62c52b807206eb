"""The benchmark runner: hit path against nginx, herd, miss overhead, memory, variants. One command:

    python -m loadtests.bench                       # full run, updates docs/benchmarks.md
    python -m loadtests.bench --duration 3 --quick  # a smoke run, docs untouched
    python -m loadtests.bench --only variants       # image variants only (loadtests/variants_bench)
    python -m loadtests.bench --only longtail       # the long tail: disk tier vs nginx (longtail)

Every server it needs (nginx, redis-server, the fake Gemini, `banatie serve|origin|edge`) is
started here on free loopback ports, in its own process group, and stopped at the end, also
on errors and Ctrl-C. Needs `nginx`, `wrk` and `redis-server` on PATH; py-spy for --profile.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from loadtests import client, longtail, report, wrk
from loadtests.client import Connection, open_many
from loadtests.processes import (
    PROJECT_ROOT,
    Process,
    Processes,
    clean_env,
    free_port,
    need,
    nginx_worker,
    rss_bytes,
    run_banatie,
    start_banatie,
    start_bare,
    start_nginx,
    start_redis,
    start_stub,
)

ORG, PROJECT = "default", "default"
KB = 1024
MB = 1024 * 1024
# Headers the server adds itself or that belong to one connection (urllib sends
# "Connection: close", so the edge answered with it).
_NOT_FORWARDED = ("date", "server", "connection", "keep-alive", "transfer-encoding")


@dataclass
class Row:
    """One wrk measurement of one target serving one image size."""

    size: int
    target: str
    route: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float | None
    errors: int
    ratio_to_static: float | None = None


@dataclass
class Results:
    command: str
    started: str
    machine: dict[str, Any]
    versions: dict[str, str]
    settings: dict[str, Any]
    load_before: str = ""
    load_after: str = ""
    rows: list[Row] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    herd: list[dict[str, Any]] = field(default_factory=list)
    miss: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    variants: dict[str, Any] = field(default_factory=dict)
    longtail: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- small helpers ----------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def live_path(scope: str, prompt: str) -> str:
    return f"/cdn/{ORG}/{PROJECT}/live/{scope}?prompt={quote(prompt, safe='')}&autoEnhance=false"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_kb / MB, 1),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("uvicorn", "uvloop", "httptools", "starlette", "redis", "py-spy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    for name, command in (
        ("nginx", ["nginx", "-v"]),
        ("wrk", ["wrk", "-v"]),
        ("redis-server", ["redis-server", "--version"]),
    ):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            text = (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            text = "not found"
        # nginx -v, wrk -v and redis-server --version say more than the version: trim them
        text = text.removeprefix("nginx version: ").split(" [")[0]
        if name == "redis-server":
            text = " ".join(text.split()[:3])
        found[name] = text
    return found


def banatie_env(stub_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Settings shared by every banatie process of the run: the fake Gemini, no budgets."""
    return clean_env(
        DATA_DIR=str(data_dir),
        GENERATOR="gemini",
        GEMINI_API_KEY="bench-not-a-real-key",
        GEMINI_BASE_URL=stub_url,
        GENERATION_RETRIES="0",
        IP_BUDGET_PER_HOUR="1000000000",
        KEY_BUDGET_PER_HOUR="1000000000",
        DEFAULT_SCOPE_LIMIT="1000000000",
        LOG_LEVEL="warning",
        **extra,
    )


def stub_stats(stub_url: str) -> dict[str, Any]:
    return json.loads(http_get(stub_url + "/stats")[2])


# -- 1. the hit path ---------------------------------------------------------------------------


class HitPath:
    """nginx static, nginx proxy_cache and the edge's three tiers, per image size."""

    def __init__(
        self, args: argparse.Namespace, processes: Processes, stub_url: str, results: Results
    ):
        self.args = args
        self.processes = processes
        self.stub_url = stub_url
        self.results = results
        self.data = processes.workdir / "serve"
        self.paths = {size: live_path("bench", f"bench bytes={size}") for size in args.sizes}
        self.bodies: dict[int, bytes] = {}

    def measure(self, target: str, route: str, size: int, url: str, pid: int) -> Row:
        if self.args.warmup > 0:
            wrk.run(url, self.args.warmup, self.args.connections, self.args.threads)
        r = wrk.run(url, self.args.duration, self.args.connections, self.args.threads, pid)
        row = Row(size, target, route, r.rps, r.p50_ms, r.p99_ms, r.server_cpu_us, r.errors)
        self.results.rows.append(row)
        cpu = f"{r.server_cpu_us:6.1f} µs/req" if r.server_cpu_us else ""
        say(
            f"  {size // KB:>4} KB  {target:<28} {r.rps:9.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
            f"p99 {r.p99_ms:7.2f} ms  {cpu}  errors {r.errors}"
        )
        if r.errors:
            self.results.notes.append(
                f"{target} at {size // KB} KB: {r.errors} wrk errors (timeouts or non-2xx)"
            )
        return row

    def check_hits(
        self, base: str, expect_header: tuple[str, str] = ("x-cache-status", "HIT")
    ) -> None:
        for size, path in self.paths.items():
            for _ in range(3):
                status, headers, body = http_get(base + path)
            name, value = expect_header
            if status != 200 or body != self.bodies[size] or headers.get(name) != value:
                raise RuntimeError(
                    f"{base}{path}: status {status}, {name}={headers.get(name)!r}, "
                    f"{len(body)} bytes (expected 200, {value}, {size} bytes)"
                )

    def run(self) -> tuple[Process, str]:
        """All rows; returns the L1 `banatie serve` (still running) for the miss overhead."""
        args = self.args
        say("hit path: starting banatie serve (L1 on, in-process index)")
        serve, base = start_banatie(
            self.processes, "serve-l1", "serve", banatie_env(self.stub_url, self.data)
        )
        for size, path in self.paths.items():
            status, _, body = http_get(base + path)
            if status != 200 or len(body) != size:
                raise RuntimeError(
                    f"generating the {size}-byte image failed: {status} {body[:300]!r}"
                )
            self.bodies[size] = body
        self.check_hits(base)
        bare, bare_base = start_bare(self.processes, self._bare_folder(base))

        nginx, static_base, proxy_base = start_nginx(
            self.processes,
            {f"{size}.png": body for size, body in self.bodies.items()},
            int(base.rsplit(":", 1)[1]),
        )
        worker = nginx_worker(nginx)
        for size in args.sizes:
            status, _, body = http_get(f"{static_base}/{size}.png")
            assert status == 200 and body == self.bodies[size], "nginx static serves other bytes"
        self.check_hits(proxy_base, ("x-proxy-cache", "HIT"))

        say(f"hit path: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s per row")
        for size in args.sizes:
            path = self.paths[size]
            self.measure("nginx static", f"/{size}.png", size, f"{static_base}/{size}.png", worker)
            self.measure("nginx proxy_cache → serve", path, size, proxy_base + path, worker)
            self.measure("edge: L1 hit", path, size, base + path, serve.pid)
            bare_path = f"/{size}.png"
            self.measure("uvicorn: bare ASGI app", bare_path, size, bare_base + bare_path, bare.pid)
        if args.profile:
            self.profile(serve, base + self.paths[args.sizes[0]])
        self.processes.stop(nginx)
        self.processes.stop(bare)
        return serve, base

    def _bare_folder(self, base: str) -> Path:
        """The edge's exact answers (headers and bytes) as files for the bare ASGI app."""
        folder = self.processes.workdir / "bare"
        folder.mkdir(parents=True, exist_ok=True)
        for size, path in self.paths.items():
            _, headers, body = http_get(base + path)
            sent = [[k, v] for k, v in headers.items() if k not in _NOT_FORWARDED]
            (folder / f"{size}.png").write_bytes(body)
            (folder / f"{size}.png.headers.json").write_text(json.dumps(sent))
        return folder

    def run_lower_tiers(self, redis_url: str) -> None:
        args = self.args
        say("hit path: banatie serve with L1 off, index in Redis")
        env = banatie_env(self.stub_url, self.data, REDIS_URL=redis_url, L1_MAX_ENTRY_BYTES="0")
        serve, base = start_banatie(self.processes, "serve-redis", "serve", env)
        self.check_hits(base)
        stored = _redis_keys(redis_url, "live:*")
        if stored < len(self.paths):
            raise RuntimeError(f"the Redis index holds {stored} live keys after warming")
        for size in args.sizes:
            self.measure(
                "edge: Redis index + storage",
                self.paths[size],
                size,
                base + self.paths[size],
                serve.pid,
            )
        self.processes.stop(serve)

        say("hit path: banatie serve with L1 off, Redis unreachable (manifest + storage)")
        dead = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
        env = banatie_env(self.stub_url, self.data, REDIS_URL=dead, L1_MAX_ENTRY_BYTES="0")
        serve, base = start_banatie(self.processes, "serve-manifest", "serve", env)
        self.check_hits(base)
        for size in args.sizes:
            self.measure(
                "edge: manifest + storage",
                self.paths[size],
                size,
                base + self.paths[size],
                serve.pid,
            )
        self.processes.stop(serve)

    def profile(self, serve: Process, url: str) -> None:
        if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
            self.results.notes.append("py-spy not installed: no profile")
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        raw = self.processes.workdir / "profile-l1.txt"
        seconds = max(3, round(self.args.profile_seconds))
        say(f"hit path: py-spy on the L1 edge for {seconds} s under wrk")
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(serve.pid), "--duration", str(seconds), "--rate", "250",
             "--format", "raw", "--nonblocking", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wrk.run(url, seconds + 2, self.args.connections, self.args.threads)
        finally:
            _, err = spy.communicate(timeout=60)
        if not raw.exists():
            self.results.notes.append(f"py-spy failed: {err.strip()[-300:]}")
            return
        self.results.profile = report.summarise_profile(raw.read_text())
        self.results.profile["route"] = url.split("127.0.0.1", 1)[1].split("/", 1)[1]


def _redis_keys(url: str, pattern: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return len(client.keys(pattern))
    finally:
        client.close()


# -- 2. miss overhead -------------------------------------------------------------------------


async def _misses(base: str, samples: int, size: int, tag: str) -> list[tuple[str, float, float]]:
    """Sequential misses on one keep-alive connection: (prompt, client ms, model ms) each,
    the model's time as the origin measured it (the MISS's Server-Timing `model`)."""
    run = uuid.uuid4().hex[:8]
    connection = await Connection.open(base)
    timings = []
    try:
        for i in range(samples):
            prompt = f"miss {tag} {run} {i} noise={size}"
            started = time.perf_counter()
            response = await connection.get(live_path("miss", prompt))
            if response.status != 200 or response.header("x-cache-status") != "MISS":
                raise RuntimeError(f"miss {i}: {response.status} {response.headers}")
            timing = dict(
                part.strip().split(";dur=", 1)
                for part in (response.header("server-timing") or "").split(",")
                if ";dur=" in part
            )
            model_ms = float(timing.get("model", "nan"))
            timings.append((prompt, (response.done_at - started) * 1000, model_ms))
    finally:
        await connection.close()
    return timings


def miss_overhead(
    base: str, stub_url: str, layout: str, args: argparse.Namespace, results: Results
) -> None:
    say(f"miss overhead ({layout}): {args.miss_samples} sequential misses of a ~1 MB PNG")
    client.run(_misses(base, 3, args.miss_bytes, "warmup"))  # SDK client, noise image
    timings = client.run(_misses(base, args.miss_samples, args.miss_bytes, layout.split()[0]))
    stub = {prompt: ms for prompt, ms, _ in stub_stats(stub_url)["handler_ms"]}
    client_ms = [ms for _, ms, _ in timings]
    model = [stub[prompt] for prompt, _, _ in timings]
    overhead = [c - m for c, m in zip(client_ms, model, strict=True)]
    # Beyond the generator call as the origin timed it: what edge + origin add around the
    # SDK (the SDK's own request building and 1.3 MB base64 JSON decode are inside it).
    beyond_call = [c - g for c, (_, _, g) in zip(client_ms, timings, strict=True)]
    entry = {
        "layout": layout,
        "samples": len(timings),
        "image_bytes": args.miss_bytes,
        "client_p50_ms": statistics.median(client_ms),
        "model_p50_ms": statistics.median(model),
        "overhead_p50_ms": statistics.median(overhead),
        "overhead_p99_ms": percentile(overhead, 99),
        "overhead_max_ms": max(overhead),
        "generator_call_p50_ms": statistics.median(g for _, _, g in timings),
        "beyond_call_p50_ms": statistics.median(beyond_call),
        "beyond_call_p99_ms": percentile(beyond_call, 99),
    }
    results.miss.append(entry)
    say(
        f"  overhead p50 {entry['overhead_p50_ms']:.1f} ms, p99 {entry['overhead_p99_ms']:.1f} ms "
        f"(client p50 {entry['client_p50_ms']:.1f} ms, model p50 {entry['model_p50_ms']:.1f} ms); "
        f"beyond the generator call (SDK included): p50 {entry['beyond_call_p50_ms']:.1f} ms, "
        f"p99 {entry['beyond_call_p99_ms']:.1f} ms"
    )


# -- 3. the herd -------------------------------------------------------------------------------


async def _herd(edges: list[str], clients: int, prompt: str) -> dict[str, Any]:
    per_edge = [
        clients // len(edges) + (1 if i < clients % len(edges) else 0) for i in range(len(edges))
    ]
    groups = [await open_many(base, n) for base, n in zip(edges, per_edge, strict=True)]
    connections = [(i, c) for i, group in enumerate(groups) for c in group]
    path = live_path("herd", prompt)
    try:
        sent_unix = time.time()
        sent_at = time.perf_counter()
        for _, connection in connections:
            connection.send_get(path)
        sent_done = time.perf_counter()
        responses = await asyncio.wait_for(
            asyncio.gather(*(c.read_response() for _, c in connections)), timeout=120
        )
    finally:
        await asyncio.gather(*(c.close() for _, c in connections))
    first = min(r.done_at for r in responses)
    after_first = [(r.done_at - first) * 1000 for r in responses]
    edges_seen: dict[str, dict[str, Any]] = {}
    for (i, _), r in zip(connections, responses, strict=True):
        seen = edges_seen.setdefault(f"edge {i + 1}", {"first_ms": 1e9, "last_ms": 0.0})
        seen["first_ms"] = min(seen["first_ms"], (r.done_at - first) * 1000)
        seen["last_ms"] = max(seen["last_ms"], (r.done_at - first) * 1000)
        status = f"{r.status} {r.header('x-cache-status')}".strip()
        seen[status] = seen.get(status, 0) + 1
    statuses: dict[str, int] = {}
    for r in responses:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return {
        "clients": len(responses),
        "per_edge": per_edge,
        "sent_unix": sent_unix,
        "send_spread_ms": (sent_done - sent_at) * 1000,
        "first_response_s": first - sent_at,
        "last_after_first_ms": max(after_first),
        "p50_after_first_ms": statistics.median(after_first),
        "p99_after_first_ms": percentile(after_first, 99),
        "by_edge": edges_seen,
        "statuses": statuses,
        "image_ids": len({r.header("x-image-id") for r in responses}),
    }


def herd(
    edges: list[str],
    origin: str,
    key: str,
    stub_url: str,
    args: argparse.Namespace,
    results: Results,
) -> None:
    for size in args.herd_sizes:
        prompt = f"herd {uuid.uuid4().hex[:12]} delay={args.herd_delay:g} bytes={size}"
        say(
            f"herd: {args.herd_clients} clients over {len(edges)} edges, "
            f"model takes {args.herd_delay:g} s, {size // KB} KB image"
        )
        found = client.run(_herd(edges, args.herd_clients, prompt))
        found["model_delay_s"] = args.herd_delay
        found["image_bytes"] = size
        stats = stub_stats(stub_url)
        found["model_calls"] = stats["by_prompt"].get(prompt, 0)
        calls = [at for p, _, at in stats["handler_ms"] if p == prompt]
        if calls:  # when the model was asked, after the requests went out
            found["model_asked_after_s"] = calls[0] - found["sent_unix"]
        status, _, body = http_get(f"{origin}/api/v1/generations?limit=100", {"X-API-Key": key})
        rows = json.loads(body)["data"] if status == 200 else []
        found["generation_rows"] = sum(1 for g in rows if g.get("originalPrompt") == prompt)
        results.herd.append(found)
        say(
            f"  model calls {found['model_calls']}, generation rows {found['generation_rows']}, "
            f"statuses {found['statuses']}, first after {found['first_response_s']:.3f} s "
            f"(model asked after {found.get('model_asked_after_s', float('nan')):.3f} s), "
            f"last follower +{found['last_after_first_ms']:.1f} ms "
            f"(p50 +{found['p50_after_first_ms']:.1f}); "
            + ", ".join(
                f"{k}: +{v['first_ms']:.0f}..+{v['last_ms']:.0f} ms"
                for k, v in found["by_edge"].items()
            )
        )


# -- 4. memory ---------------------------------------------------------------------------------


def seed_live_keys(objects_dir: Path, count: int, size: int) -> list[str]:
    """`count` live keys written straight into the local store, as the origin writes them.

    An image and a manifest per key (the project id and model are read from a manifest the
    origin wrote), so an edge finds each through its normal lookup: index, else manifest.
    """
    from cache.index import LiveRecord
    from cache.live_key import LiveKey, image_key, manifest_key
    from cache.objects.local import LocalStore
    from loadtests.gemini_stub import padded_png

    manifests = sorted((objects_dir / ORG / PROJECT / "live").glob("*.json"))
    if not manifests:
        raise RuntimeError("no manifest to learn the project id and model from")
    canonical = json.loads(manifests[0].read_text())["canonical"].split("\x1f")
    project_id, model = canonical[1], canonical[7]
    store = LocalStore(objects_dir)
    run = uuid.uuid4().hex[:8]
    paths = []

    async def write_all() -> None:
        gate = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            prompt = f"memory {run} {i}"
            key = LiveKey(project_id, "memory", prompt, "1:1", False, "general", model)
            body = padded_png(prompt.encode(), size)
            image_id = str(uuid.uuid4())
            record = LiveRecord(
                image_id=image_id,
                generation_id=None,
                object_key=image_key(ORG, PROJECT, image_id),
                content_type="image/png",
                size=len(body),
                etag=f'"{hashlib.sha256(body).hexdigest()}"',
                canonical=key.canonical,
            )
            async with gate:
                await store.put(record.object_key, body, "image/png")
                await store.put(
                    manifest_key(ORG, PROJECT, key.digest), record.to_json(), "application/json"
                )
            paths.append(live_path("memory", prompt))

        await asyncio.gather(*(one(i) for i in range(count)))

    asyncio.run(write_all())
    return paths


def memory(
    name: str,
    process: Process,
    base: str,
    paths: list[str],
    l1_bytes: int,
    size: int,
    results: Results,
) -> None:
    say(
        f"memory ({name}): {len(paths)} distinct keys of {size // KB} KB, "
        f"L1 budget {l1_bytes // MB} MB"
    )
    before = rss_bytes(process.pid)
    started = time.perf_counter()
    first = client.run(client.get_all(base, paths, 16))
    if set(first) != {"200"}:
        results.notes.append(f"memory ({name}): first pass answered {first}")
    seconds = time.perf_counter() - started
    after_one = rss_bytes(process.pid)
    second = client.run(client.get_all(base, paths, 16))
    after_two = rss_bytes(process.pid)
    entry = {
        "process": name,
        "keys": len(paths),
        "image_bytes": size,
        "l1_budget_bytes": l1_bytes,
        "rss_start_bytes": before,
        "rss_after_pass1_bytes": after_one,
        "rss_after_pass2_bytes": after_two,
        "pass1_rps": len(paths) / seconds,
        "statuses": {"pass1": first, "pass2": second},
    }
    results.memory.append(entry)
    say(
        f"  RSS {before / MB:.0f} MB at start → {after_one / MB:.0f} MB after {len(paths)} keys → "
        f"{after_two / MB:.0f} MB after a second pass ({first}, {second})"
    )


# -- the two layouts ---------------------------------------------------------------------------


def one_process(
    args: argparse.Namespace, processes: Processes, stub_url: str, results: Results
) -> None:
    hit = HitPath(args, processes, stub_url, results)
    if "hits" in args.only:
        serve, base = hit.run()
    else:
        serve, base = start_banatie(processes, "serve-l1", "serve", banatie_env(stub_url, hit.data))
    if "miss" in args.only:
        miss_overhead(base, stub_url, "one process (banatie serve)", args, results)
    processes.stop(serve)
    if "hits" in args.only:
        redis, redis_url = start_redis(processes)
        try:
            hit.run_lower_tiers(redis_url)
        finally:
            processes.stop(redis)


def split(args: argparse.Namespace, processes: Processes, stub_url: str, results: Results) -> None:
    """`banatie origin` + 2 x `banatie edge` sharing a Redis: herd, miss overhead, memory."""
    data = processes.workdir / "split"
    redis, redis_url = start_redis(processes)
    token = secrets.token_hex(16)
    env = banatie_env(stub_url, data, REDIS_URL=redis_url, SERVICE_TOKEN=token)
    key = run_banatie(
        ["keys", "create", "--org", ORG, "--project", PROJECT, "--name", "bench"], env
    )
    key = key.strip().splitlines()[0]
    say("split layout: banatie origin + 2 x banatie edge + redis")
    origin, origin_url = start_banatie(processes, "origin", "origin", env)
    edge_env = {**env, "ORIGIN_URL": origin_url, "OBJECTS_DIR": str(data / "objects")}
    edges = [start_banatie(processes, f"edge-{i}", "edge", edge_env) for i in (1, 2)]
    for _, base in edges:
        # A running edge has met the project, the origin and Redis before: one miss each.
        status, _, body = http_get(base + live_path("warm", f"warm {uuid.uuid4().hex}"))
        if status != 200:
            raise RuntimeError(f"warm-up miss through {base}: {status} {body[:300]!r}")
    if "herd" in args.only:
        herd([base for _, base in edges], origin_url, key, stub_url, args, results)
    if "miss" in args.only:
        miss_overhead(edges[0][1], stub_url, "split (banatie edge → banatie origin)", args, results)
    if "memory" in args.only:
        say(f"memory: seeding {args.memory_keys} live keys into the object store")
        paths = seed_live_keys(data / "objects", args.memory_keys, args.memory_bytes)
        edge_process, edge_base = edges[1]
        memory("banatie edge", edge_process, edge_base, paths, 256 * MB, args.memory_bytes, results)
        for process, _ in edges:
            processes.stop(process)
        processes.stop(origin)
        serve, base = start_banatie(processes, "serve-memory", "serve", banatie_env(stub_url, data))
        memory("banatie serve", serve, base, paths, 256 * MB, args.memory_bytes, results)
        processes.stop(serve)
    for process, _ in edges:
        processes.stop(process)
    processes.stop(origin)
    processes.stop(redis)


# -- 5. image variants --------------------------------------------------------------------------


def variants(args: argparse.Namespace, processes: Processes, results: Results) -> None:
    """loadtests/variants_bench.py's measurement: `banatie serve` with a 1344x768 upload."""
    from loadtests import variants_bench

    say(
        f"variants: 1344x768 PNG, {args.variant_samples} cold variants per format, "
        f"hits {args.duration:g} s per row"
    )
    found = variants_bench.measure(
        processes, processes.workdir, args.duration, args.variant_samples
    )
    results.variants = found
    for fmt, x in found["first_transform_ms"].items():
        say(
            f"  {fmt}: first transform p50 {x['p50']:.0f} ms p99 {x['p99']:.0f} ms, "
            f"400 px {x['bytes_400px']:,} bytes ({x['saved_pct']:.1f} % saved)"
        )
    for name, row in found["hits"].items():
        say(f"  hit {name}: {row['rps']:,.0f} req/s p50 {row['p50_ms']:.2f} ms")


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per wrk row (15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk seconds before each row (2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (1: one core for wrk, one for the server)",
    )
    parser.add_argument("--sizes", default="50,300", help="image sizes in KB (50,300)")
    parser.add_argument(
        "--only", default="hits,miss,herd,memory,variants,longtail", help="sections to run"
    )
    parser.add_argument("--herd-clients", type=int, default=500)
    parser.add_argument("--herd-delay", type=float, default=2.0, help="model latency, seconds")
    parser.add_argument("--herd-sizes", default="1,50", help="herd image sizes in KB (1,50)")
    parser.add_argument("--miss-samples", type=int, default=100)
    parser.add_argument("--miss-bytes", type=int, default=1_000_000)
    parser.add_argument("--memory-keys", type=int, default=10_000)
    parser.add_argument("--memory-bytes", type=int, default=40 * KB)
    parser.add_argument(
        "--variant-samples", type=int, default=30, help="cold variants per format (30)"
    )
    parser.add_argument("--longtail-images", type=int, default=600, help="catalogue size (600)")
    parser.add_argument("--longtail-kb", type=int, default=100, help="image size, KB (100)")
    parser.add_argument("--longtail-l1-mb", type=int, default=16, help="the edge's L1, MB (16)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="short everything; docs untouched")
    parser.add_argument("--no-docs", dest="docs", action="store_false", help="leave docs/ alone")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) * KB for s in args.sizes.split(",") if s]
    args.herd_sizes = [int(s) * KB for s in args.herd_sizes.split(",") if s]
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.warmup = min(args.warmup, 1.0)
        args.miss_samples = min(args.miss_samples, 20)
        args.memory_keys = min(args.memory_keys, 1000)
        args.variant_samples = min(args.variant_samples, 10)
        args.longtail_images = min(args.longtail_images, 200)
        args.profile_seconds = min(args.profile_seconds, 3.0)
        args.docs = False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for binary, package in (("nginx", "nginx"), ("wrk", "wrk"), ("redis-server", "redis-server")):
        need(binary, package)
    workdir = Path(tempfile.mkdtemp(prefix="banatie-bench-"))
    processes = Processes(workdir)
    results = Results(
        command="python -m loadtests.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=machine(),
        versions=versions(),
        settings={
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "sizes": args.sizes,
        },
        load_before=loadavg(),
    )

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    say(f"work directory {workdir}; load average {results.load_before}")
    failed = False
    try:
        _, stub_url = start_stub(processes)
        if args.only & {"hits", "miss"}:
            one_process(args, processes, stub_url, results)
        if args.only & {"herd", "miss", "memory"}:
            split(args, processes, stub_url, results)
        if "variants" in args.only:
            variants(args, processes, results)
        if "longtail" in args.only:
            results.longtail = longtail.measure(processes, stub_url, args, banatie_env)
    except BaseException as e:
        failed = True
        say(f"FAILED: {type(e).__name__}: {e}")
        results.notes.append(f"run failed: {type(e).__name__}: {e}")
        if not isinstance(e, Exception):
            raise
    finally:
        processes.stop_all()
        results.load_after = loadavg()
        _finish(args, results, workdir, failed)
    return 1 if failed else 0


def _finish(args: argparse.Namespace, results: Results, workdir: Path, failed: bool) -> None:
    report.add_ratios(results.rows)
    raw = json.dumps(asdict(results), indent=2, default=str)
    (workdir / "results.json").write_text(raw)
    if args.json:
        args.json.write_text(raw)
    text = report.markdown(results)
    print("\n" + text)
    docs = PROJECT_ROOT / "docs"
    if args.docs and not failed and results.rows:
        report.chart(results, docs / "bench-hit-path.png")
        report.update_docs(docs / "benchmarks.md", text)
        say(f"wrote {docs / 'benchmarks.md'} and {docs / 'bench-hit-path.png'}")
    if results.variants:
        variants_text = report.variants_markdown(results)
        print("\n" + variants_text)
        if args.docs and not failed:
            report.update_docs(
                docs / "benchmarks.md",
                variants_text,
                report.VARIANTS_START,
                report.VARIANTS_END,
                "## Image variants",
            )
            say(f"wrote the variants section of {docs / 'benchmarks.md'}")
    if results.longtail:
        longtail_text = longtail.markdown(
            results.longtail,
            results.started,
            results.command,
            (results.load_before, results.load_after),
        )
        print("\n" + longtail_text)
        if args.docs and not failed:
            report.update_docs(
                docs / "benchmarks.md",
                longtail_text,
                longtail.DOCS_START,
                longtail.DOCS_END,
                "## Long tail: the disk tier",
            )
            say(f"wrote the long-tail section of {docs / 'benchmarks.md'}")
    if args.keep or failed:
        say(f"logs and results kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
