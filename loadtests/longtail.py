"""The long tail: a catalogue several times the edge's L1, asked for in Zipf(0.9) order.

    python -m loadtests.bench --only longtail                # this section alone, docs updated
    python -m loadtests.bench --only longtail --quick        # a smoke run, docs untouched

The production layout, every part a real process: `banatie origin` + `banatie edge` sharing a
redis-server and an S3-protocol server (moto), the model the stub of loadtests/gemini_stub.py
answering at once. The catalogue (600 live images of 100 KB by default, 3.75 x a 16 MB L1)
is made by live misses through the edge. wrk replays one request order for every target: a
Zipf(0.9) draw over the catalogue from a fixed seed, precomputed into a Lua script. nginx
(proxy_cache, one worker, `tcp_nopush off`, `sendfile on`, a cache big enough for all) in
front of the same edge is the reference, in the same run.

Reported: req/s of each and the ratio, p50/p99, hits per tier, object-store GETs per 1,000
requests (counted in moto's request log) after warm-up and after an edge restart, the edge's
RSS with one worker and with two, `banatie serve` on a local store with and without the disk
tier, and the hit ratio of each eviction policy (the real DiskCache behind the real L1, at
disk sizes below the catalogue, replaying the same kind of Zipf order in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from loadtests import wrk
from loadtests.client import get_all
from loadtests.processes import (
    Process,
    Processes,
    TimedOut,
    children,
    nginx_worker,
    poll,
    rss_bytes,
    run_banatie,
    start_banatie,
    start_moto,
    start_nginx,
    start_redis,
)

ORG = PROJECT = "default"
KB, MB = 1024, 1024 * 1024
ZIPF_S = 0.9
SEED = 20_240_613
SEQUENCE = 100_000  # requests in the replayed order (wrk cycles through it)
DOCS_START = "<!-- bench:longtail:start -->"
DOCS_END = "<!-- bench:longtail:end -->"


def say(text: str) -> None:
    print(f"[longtail {time.strftime('%H:%M:%S')}] {text}", flush=True)


def tail_path(n: int, size: int) -> str:
    prompt = f"long tail {n} bytes={size}"
    return f"/cdn/{ORG}/{PROJECT}/live/tail?prompt={quote(prompt, safe='')}&autoEnhance=false"


def zipf_order(items: int, length: int, s: float = ZIPF_S, seed: int = SEED) -> list[int]:
    """`length` draws of item indexes 0..items-1, item k with weight 1/(k+1)**s."""
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** s for k in range(items)]
    ranks = list(range(items))
    rng.shuffle(ranks)  # popularity unrelated to the order the catalogue was made in
    drawn = rng.choices(range(items), weights=weights, k=length)
    return [ranks[d] for d in drawn]


def lua_script(paths: list[str], order: list[int], folder: Path) -> str:
    """A wrk script sending `paths` in `order` (each request formatted once, at init)."""
    listed = ",\n".join(f'  "{p}"' for p in paths)
    sequence = ",".join(str(i + 1) for i in order)
    script = folder / "longtail.lua"
    script.write_text(
        f"local paths = {{\n{listed}\n}}\n"
        f"local order = {{{sequence}}}\n"
        "local requests = {}\n"
        "local i = 0\n"
        "function init(args)\n"
        "  for n, path in ipairs(paths) do requests[n] = wrk.format('GET', path) end\n"
        "end\n"
        "function request()\n"
        "  i = i + 1\n"
        "  if i > #order then i = 1 end\n"
        "  return requests[order[i]]\n"
        "end\n"
    )
    return str(script)


# -- counting ---------------------------------------------------------------------------------


def metrics(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


TIERS = ("l1", "disk", "index", "manifest")


def tier_hits(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    hits = {
        tier: after.get(f'banatie_cache_hits_total{{tier="{tier}"}}', 0)
        - before.get(f'banatie_cache_hits_total{{tier="{tier}"}}', 0)
        for tier in TIERS
    }
    hits["miss"] = after.get("banatie_cache_misses_total", 0) - before.get(
        "banatie_cache_misses_total", 0
    )
    return hits


class S3Log:
    """GETs the S3 server answered on one bucket, from its request log."""

    def __init__(self, process: Process, bucket: str) -> None:
        self.log = process.log
        self.pattern = re.compile(rf'"(?:\x1b\[[0-9;]*m)*GET /{re.escape(bucket)}/')

    def gets(self) -> int:
        return len(self.pattern.findall(self.log.read_text(errors="replace")))


def group_rss(process: Process) -> int:
    """RSS of a process and its children (uvicorn's workers)."""
    total = rss_bytes(process.pid)
    for child in children(process.pid):
        try:
            total += rss_bytes(child)
        except (OSError, RuntimeError):
            pass
    return total


def worker_rss(process: Process) -> list[int]:
    """RSS of each uvicorn worker (the children), or of the process itself with one."""
    found = []
    for child in children(process.pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():  # not multiprocessing's resource tracker
                    found.append(rss_bytes(child))
        except (OSError, RuntimeError):
            pass
    return found or [rss_bytes(process.pid)]


def fill(base: str, paths: list[str], connections: int = 8) -> dict[str, int]:
    return asyncio.run(get_all(base, paths, connections))


def on_disk(base: str, paths: list[str]) -> None:
    """Wait until the disk tier holds every path; ask again for what it did not keep (a
    flood of misses outruns the writer, which then skips writes rather than queue them)."""
    for _ in range(5):
        try:
            poll(
                lambda: metrics(base).get("banatie_disk_cache_entries", 0) >= len(paths),
                "the disk cache to hold the catalogue",
                timeout_s=20,
                poll_s=0.2,
            )
            return
        except TimedOut:
            fill(base, paths)
    raise RuntimeError(f"{base}: the disk cache never held all {len(paths)} images")


# -- the run ----------------------------------------------------------------------------------


def measure(
    processes: Processes, stub_url: str, args: argparse.Namespace, banatie_env: Any
) -> dict[str, Any]:
    """Everything above; `banatie_env(stub_url, data_dir, **extra)` is bench.py's."""
    items, size, l1_bytes = args.longtail_images, args.longtail_kb * KB, args.longtail_l1_mb * MB
    # Long enough for the edge to have read every disk file once (then it sends them).
    duration, warmup = args.duration, (3.0 if args.quick else max(args.warmup, 10.0))
    conns, threads = args.connections, args.threads
    out: dict[str, Any] = {
        "images": items,
        "image_bytes": size,
        "l1_bytes": l1_bytes,
        "catalogue_over_l1": items * size / l1_bytes,
        "zipf_s": ZIPF_S,
        "seed": SEED,
        "duration_s": duration,
        "rows": [],
        "load": [],
    }
    work = processes.workdir / "longtail"
    work.mkdir(parents=True, exist_ok=True)
    paths = [tail_path(n, size) for n in range(items)]
    script = lua_script(paths, zipf_order(items, SEQUENCE), work)

    def row(name: str, base: str, pid: int, seconds: float = duration) -> dict[str, Any]:
        result = wrk.run(base + paths[0], seconds, conns, threads, pid, script=script)
        entry = {
            "target": name,
            "rps": result.rps,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "requests": result.requests,
            "errors": result.errors,
            "cpu_us": result.server_cpu_us,
        }
        out["rows"].append(entry)
        out["load"].append(_loadavg())
        say(
            f"  {name:<40} {result.rps:9.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}"
        )
        return entry

    def edge_row(
        name: str, base: str, process: Process, s3: S3Log, one_worker: bool = True
    ) -> dict[str, Any]:
        before, gets = metrics(base), s3.gets()
        entry = row(name, base, process.pid if one_worker else 0)  # 0: CPU not counted
        entry["hits"] = tier_hits(before, metrics(base))
        entry["s3_gets"] = s3.gets() - gets
        entry["s3_gets_per_1000"] = 1000 * entry["s3_gets"] / max(1, entry["requests"])
        entry["rss_bytes"] = group_rss(process)
        say(
            f"    hits {_tiers(entry['hits'])}; S3 GETs {entry['s3_gets']} "
            f"({entry['s3_gets_per_1000']:.2f} per 1,000); RSS {entry['rss_bytes'] / MB:.0f} MB"
        )
        return entry

    # The production layout.
    redis, redis_url = start_redis(processes)
    moto, s3_url = start_moto(processes)
    bucket = f"longtail-{secrets.token_hex(4)}"
    _create_bucket(s3_url, bucket)
    s3 = S3Log(moto, bucket)
    data = work / "data"
    token = secrets.token_hex(16)
    s3_env = {
        "S3_ENDPOINT": s3_url,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": "bench",
        "S3_SECRET_ACCESS_KEY": "bench",
    }
    env = banatie_env(stub_url, data, REDIS_URL=redis_url, SERVICE_TOKEN=token, **s3_env)
    run_banatie(["keys", "create", "--org", ORG, "--project", PROJECT, "--name", "bench"], env)
    origin, origin_url = start_banatie(processes, "lt-origin", "origin", env)
    edge_env = {
        **env,
        "ORIGIN_URL": origin_url,
        "L1_BYTES": str(l1_bytes),
        "DISK_CACHE_DIR": str(work / "edge-disk"),
    }
    edge, edge_url = start_banatie(processes, "lt-edge", "edge", edge_env)
    say(f"making {items} images of {size // KB} KB through the edge (live misses)")
    started = time.perf_counter()
    statuses = fill(edge_url, paths)
    if set(statuses) != {"200"}:
        raise RuntimeError(f"making the catalogue answered {statuses}")
    out["seed_s"] = time.perf_counter() - started
    on_disk(edge_url, paths)
    out["rss_after_seed_bytes"] = group_rss(edge)

    say(f"edge (L1 {l1_bytes // MB} MB + disk) under Zipf({ZIPF_S}): warm-up {warmup:g} s")
    wrk.run(edge_url + paths[0], warmup, conns, threads, script=script)
    edge_row("edge: warm", edge_url, edge, s3)

    nginx, _, proxy_url = start_nginx(
        processes, {}, int(edge_url.rsplit(":", 1)[1]), tcp_nopush=False
    )
    say("nginx proxy_cache in front of the same edge: filling its cache")
    fill(proxy_url, paths)
    wrk.run(proxy_url + paths[0], warmup, conns, threads, script=script)
    worker = nginx_worker(nginx)
    row("nginx proxy_cache → edge", proxy_url, worker)
    # Again, alternating: the machine's other load moves between rows, the ratio less so.
    edge_row("edge: warm (again)", edge_url, edge, s3)
    row("nginx proxy_cache → edge (again)", proxy_url, worker)
    processes.stop(nginx)

    say("edge restarted (disk kept, L1 empty): no warm-up")
    processes.stop(edge)
    edge, edge_url = start_banatie(processes, "lt-edge-restarted", "edge", edge_env)
    edge_row("edge: just restarted", edge_url, edge, s3)
    processes.stop(edge)

    say("edge with --workers 2 (one disk cache, two L1s)")
    edge, edge_url = start_banatie(processes, "lt-edge-2", "edge", edge_env, workers=2)
    wrk.run(edge_url + paths[0], warmup, conns, threads, script=script)
    two = edge_row("edge --workers 2: warm", edge_url, edge, s3, one_worker=False)
    two["worker_rss_bytes"] = worker_rss(edge)
    processes.stop(edge)
    processes.stop(origin)

    out["serve_local"] = _serve_local(
        processes, stub_url, work, paths, banatie_env, row, args, script
    )
    processes.stop(moto)
    processes.stop(redis)

    say("eviction policies: the real DiskCache behind the real L1, in this process")
    out["policies"] = compare_policies(work / "policies", args.quick)
    for p in out["policies"]:
        say(
            f"  disk {p['disk_share']:.0%} of the catalogue: SIEVE {p['sieve']:.1%}, "
            f"LRU {p['lru']:.1%} of L1 misses found on disk"
        )
    return out


def _serve_local(
    processes: Processes,
    stub_url: str,
    work: Path,
    paths: list[str],
    banatie_env: Any,
    row: Any,
    args: argparse.Namespace,
    script: str,
) -> list[dict[str, Any]]:
    """`banatie serve` on a local object store: with and without the disk tier."""
    found = []
    data = work / "serve-data"
    for disk in ("0", str(10 * 1024**3)):
        label = "banatie serve (local store), " + ("no disk tier" if disk == "0" else "disk tier")
        env = banatie_env(
            stub_url,
            data,
            L1_BYTES=str(args.longtail_l1_mb * MB),
            DISK_CACHE_BYTES=disk,
            DISK_CACHE_DIR=str(work / "serve-disk"),
        )
        serve, base = start_banatie(processes, f"lt-serve-{disk}", "serve", env)
        say(f"{label}: {len(paths)} images")
        statuses = fill(base, paths)
        if set(statuses) != {"200"}:
            raise RuntimeError(f"{label}: {statuses}")
        if disk != "0":
            on_disk(base, paths)
        warmup = 3.0 if args.quick else max(args.warmup, 10.0)
        wrk.run(base + paths[0], warmup, args.connections, args.threads, script=script)
        before = metrics(base)
        entry = row(label, base, serve.pid)
        entry["hits"] = tier_hits(before, metrics(base))
        entry["rss_bytes"] = group_rss(serve)
        say(f"    hits {_tiers(entry['hits'])}")
        found.append(entry)
        processes.stop(serve)
    return found


def _create_bucket(endpoint: str, bucket: str) -> None:
    from cache.objects.s3 import S3Store

    async def create() -> None:
        store = S3Store(
            bucket=bucket,
            endpoint=endpoint,
            region="us-east-1",
            access_key_id="bench",
            secret_access_key="bench",
        )
        try:
            await store.create_bucket()
        finally:
            await store.close()

    asyncio.run(create())


def _cpu(row: dict[str, Any]) -> str:
    return f"{row['cpu_us']:.0f}" if row.get("cpu_us") else ""


def _tiers(hits: dict[str, float]) -> str:
    total = sum(hits.values()) or 1
    return ", ".join(f"{k} {v / total:.1%}" for k, v in hits.items() if v)


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# -- eviction policies ------------------------------------------------------------------------


def compare_policies(folder: Path, quick: bool = False) -> list[dict[str, Any]]:
    """SIEVE and LRU in the real DiskCache behind the real L1 (LRU), on Zipf(0.9) draws.

    Sizes scaled down (2,000 images of 8 KB, an L1 of 1/4 of them) so the replay takes
    seconds: with equal sizes a policy's hit ratio depends on counts, not bytes."""
    from edge.disk_cache import DiskCache
    from edge.lru import Entry, ResponseCache

    items, size = (1000, 8 * KB) if quick else (2000, 8 * KB)
    requests = 40_000 if quick else 120_000
    order = zipf_order(items, requests, seed=SEED + 1)
    body = bytes(size)
    results = []
    for share in (0.1, 0.25, 0.5):
        found: dict[str, Any] = {"disk_share": share, "images": items, "requests": requests}
        for policy in ("sieve", "lru"):
            shutil.rmtree(folder, ignore_errors=True)
            l1 = ResponseCache(items * size // 4, 1 << 20)
            disk = DiskCache(folder, int(items * size * share) + 1, policy=policy)
            l1_misses = disk_hits = 0
            try:
                for n, item in enumerate(order):
                    key = f"item {item}"
                    if l1.get(key) is not None:
                        continue
                    l1_misses += 1
                    entry = disk.read_now(key)
                    if entry is None:
                        entry = Entry(200, [(b"etag", b'"x"')], [], body, '"x"', str(item))
                        disk.put(key, entry)
                    else:
                        disk_hits += 1
                    l1.put(key, entry)
                    if n % 500 == 0:
                        disk.flush()  # the edge records reads once a second
            finally:
                disk.flush()
                disk.close_now()
            found[policy] = disk_hits / max(1, l1_misses)
            found[f"{policy}_store_reads_per_1000"] = 1000 * (l1_misses - disk_hits) / requests
        results.append(found)
    shutil.rmtree(folder, ignore_errors=True)
    return results


# -- the markdown -----------------------------------------------------------------------------


def markdown(found: dict[str, Any], started: str, command: str, load: tuple[str, str]) -> str:
    rows = {r["target"]: r for r in found["rows"]}
    warm = rows["edge: warm"]
    pairs = [
        (rows[f"edge: warm{again}"]["rps"], rows[f"nginx proxy_cache → edge{again}"]["rps"])
        for again in ("", " (again)")
    ]
    restarted = rows["edge: just restarted"]
    two = rows["edge --workers 2: warm"]
    ratio = sum(e for e, _ in pairs) / max(1.0, sum(n for _, n in pairs))
    budget = found["l1_bytes"] + 150 * MB
    lines = [
        f"Run `{command}` at {started}; load average {load[0]} before, {load[1]} after "
        f"(per row: {', '.join(found['load'])}). {found['images']} live images of "
        f"{found['image_bytes'] // KB} KB (catalogue {found['catalogue_over_l1']:.2f} x the "
        f"{found['l1_bytes'] // MB} MB L1), made by live misses in {found['seed_s']:.0f} s; "
        f"wrk replays one Zipf({found['zipf_s']}) order (seed {found['seed']}) against every "
        f"target, {found['duration_s']:g} s a row.",
        "",
        "| target | req/s | p50 ms | p99 ms | server CPU µs/req | hits: L1 / disk / index / miss "
        "| S3 GETs per 1,000 | RSS MB |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in found["rows"]:
        if r["target"].startswith("banatie serve"):
            continue  # below, with their own hit columns
        hits = r.get("hits")
        share = ""
        if hits:
            total = sum(hits.values()) or 1
            share = " / ".join(f"{hits[k] / total:.1%}" for k in ("l1", "disk", "index", "miss"))
        gets = f"{r['s3_gets_per_1000']:.2f}" if "s3_gets_per_1000" in r else ""
        rss = f"{r['rss_bytes'] / MB:.0f}" if "rss_bytes" in r else ""
        lines.append(
            f"| {r['target']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{_cpu(r)} | {share} | {gets} | {rss} |"
        )
    for r in found["serve_local"]:
        hits = r["hits"]
        total = sum(hits.values()) or 1
        share = " / ".join(f"{hits[k] / total:.1%}" for k in ("l1", "disk", "index", "miss"))
        lines.append(
            f"| {r['target']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{_cpu(r)} | {share} |  | {r['rss_bytes'] / MB:.0f} |"
        )
    workers = two.get("worker_rss_bytes", [])
    met = {True: "**met**", False: "**not met**"}
    lines += [
        "",
        f"- Edge / nginx proxy_cache: **{ratio:.2f}x** (req/s of the two edge rows over the two "
        f"nginx rows, measured alternately; {pairs[0][0] / pairs[0][1]:.2f}x and "
        f"{pairs[1][0] / pairs[1][1]:.2f}x pair by pair; target ≥ 0.7x, stretch 1.0x): "
        f"{met[ratio >= 0.7]}{' (stretch too)' if ratio >= 1 else ''}.",
        f"- S3 GETs per 1,000 requests: {warm['s3_gets_per_1000']:.2f} after warm-up, "
        f"{restarted['s3_gets_per_1000']:.2f} right after a restart (target ≤ 1): "
        f"{met[warm['s3_gets_per_1000'] <= 1 and restarted['s3_gets_per_1000'] <= 1]}.",
        f"- Edge RSS {warm['rss_bytes'] / MB:.0f} MB with one worker (target ≤ L1 + 150 MB = "
        f"{budget / MB:.0f} MB): {met[warm['rss_bytes'] <= budget]}. With `--workers 2`: "
        f"{' + '.join(f'{w / MB:.0f}' for w in workers)} MB for the workers, "
        f"{two['rss_bytes'] / MB:.0f} MB with the supervisor; the disk cache's bytes are on "
        "disk (and in the page cache) once for both.",
        "",
        "Eviction policies (the real `DiskCache` behind the real L1, "
        f"{found['policies'][0]['images']} images, {found['policies'][0]['requests']:,} "
        "Zipf(0.9) draws; share of L1 misses found on disk, and storage reads per 1,000 "
        "requests):",
        "",
        "| disk size / catalogue | SIEVE | LRU | storage reads per 1,000: SIEVE | LRU |",
        "|---:|---:|---:|---:|---:|",
    ]
    for p in found["policies"]:
        lines.append(
            f"| {p['disk_share']:.0%} | {p['sieve']:.1%} | {p['lru']:.1%} | "
            f"{p['sieve_store_reads_per_1000']:.0f} | {p['lru_store_reads_per_1000']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """A quick run on its own (no docs): python -m loadtests.longtail."""
    from loadtests import bench

    bench.main(["--only", "longtail", "--quick"])


if __name__ == "__main__":
    main()
