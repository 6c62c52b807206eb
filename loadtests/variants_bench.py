"""Image variants: hit throughput, first-transform latency per format, bytes saved. One command:

    python -m loadtests.variants_bench                 # ~1 minute; prints a markdown table
    python -m loadtests.variants_bench --duration 3 --samples 10   # a smoke run

It starts `banatie serve` (one worker, offline generator) on a free loopback port, uploads a
1344x768 photo-like PNG (about 1.4 MB, like a Gemini answer), then

- first transform: `samples` cold variants per format, each a width never asked before
  (400, 401, ...), timed at the client through HTTP (decode + resize + encode + storage write),
  and the same transform alone in this process (Pillow; pyvips too when it is installed);
- hits: wrk (when installed; else a small asyncio client) on one 400 px WebP variant URL, and
  on the original for comparison;
- bytes: each 400 px variant's size against the PNG original.

Everything it starts is stopped at the end, also on errors. Nothing is written to docs/ from
here; `python -m loadtests.bench --only variants` runs the same `measure` and writes its table
into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFilter

from cache.settings import Settings
from edge.transform import Limits, avif_supported, render
from edge.variants import VariantSpec
from loadtests.processes import Processes, clean_env, run_banatie, start_banatie

ORG = PROJECT = "default"
WIDTH, HEIGHT = 1344, 768
FORMATS = ("webp", "avif", "jpeg", "png")


def photo_like_png(width: int = WIDTH, height: int = HEIGHT, seed: int = 7) -> bytes:
    """A PNG that compresses like a photograph (gradients, blotches, shapes, grain): a
    flat drawing would flatter PNG and make every variant look like a bigger saving."""
    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    tint = Image.merge(
        "RGB",
        [
            Image.effect_noise((width // 16, height // 16), 60).resize((width, height), 3)
            for _ in range(3)
        ],
    )
    image = Image.blend(base, tint, 0.6)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        r = rng.randint(10, 120)
        x, y = rng.randint(0, width), rng.randint(0, height)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)  # type: ignore[arg-type]
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    grain = Image.merge("RGB", [Image.effect_noise((width, height), 10) for _ in range(3)])
    image = Image.blend(image, grain, 0.12)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def formats() -> list[str]:
    return [f for f in FORMATS if f != "avif" or avif_supported()]


# -- in-process: the transform alone -----------------------------------------------------------


Timing = tuple[list[float], list[float]]  # wall ms, CPU ms (every thread of this process)


def engines(source: bytes) -> dict[str, Callable[[str], bytes]]:
    """The edge's transform (Pillow), and libvips doing the same when pyvips is installed."""

    defaults = Settings()
    limits = Limits(defaults.max_variant_dimension, defaults.max_variant_pixels)

    def pillow(fmt: str) -> bytes:
        return render(source, VariantSpec(400, None, "cover", fmt, 80), fmt, None, limits)

    found: dict[str, Callable[[str], bytes]] = {"Pillow": pillow}
    try:
        import pyvips  # type: ignore[import-not-found]
    except (ImportError, OSError):
        return found
    savers = {
        "webp": lambda im: im.webpsave_buffer(Q=80),
        "jpeg": lambda im: im.jpegsave_buffer(Q=80),
        "png": lambda im: im.pngsave_buffer(),
        "avif": lambda im: im.heifsave_buffer(Q=80, compression="av1", effort=2),
    }

    def vips(fmt: str) -> bytes:
        return savers[fmt](pyvips.Image.thumbnail_buffer(source, 400))

    found["pyvips"] = vips
    return found


def in_process(source: bytes, samples: int) -> dict[tuple[str, str], Timing]:
    """Each engine and format, interleaved so that a busy machine slows them alike."""
    timings: dict[tuple[str, str], Timing] = {}
    for fmt in formats():
        runs = {}
        for name, make in engines(source).items():
            try:
                make(fmt)  # warm: codecs loaded
            except Exception as e:  # an engine without this format
                print(f"{name} cannot make {fmt}: {e}", file=sys.stderr)
                continue
            runs[name] = make
            timings[(name, fmt)] = ([], [])
        for _ in range(samples):
            for name, make in runs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                make(fmt)
                timings[(name, fmt)][0].append((time.perf_counter() - wall) * 1000)
                timings[(name, fmt)][1].append((time.process_time() - cpu) * 1000)
    return timings


# -- through the server --------------------------------------------------------------------------


async def first_transforms(
    base: str, image_id: str, samples: int
) -> dict[str, tuple[list[float], int]]:
    """Per format: client-side latencies of cold variants, and the 400 px variant's size."""
    found: dict[str, tuple[list[float], int]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        url = f"/cdn/{ORG}/{PROJECT}/img/{image_id}"
        for fmt in formats():
            times = []
            for n in range(samples):
                width = 400 + n  # each one never asked before in this format
                started = time.perf_counter()
                response = await http.get(url, params={"w": str(width), "format": fmt})
                times.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200 or response.headers["x-cache-status"] != "MISS":
                    raise RuntimeError(f"{fmt} w={width}: {response.status_code} {response.text}")
            size = len((await http.get(url, params={"w": "400", "format": fmt})).content)
            found[fmt] = (times, size)
    return found


def hit_throughput(url: str, duration_s: float, server_pid: int) -> dict[str, float]:
    from loadtests import wrk
    from loadtests.processes import need

    try:
        need("wrk", "wrk")
    except (RuntimeError, SystemExit):
        return asyncio.run(_client_throughput(url, duration_s))
    result = wrk.run(url, duration_s, connections=50, threads=1, server_pid=server_pid)
    if not result.ok:
        raise RuntimeError(f"wrk saw {result.errors} errors on {url}")
    return {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}


async def _client_throughput(
    url: str, duration_s: float, connections: int = 16
) -> dict[str, float]:
    times: list[float] = []
    deadline = time.monotonic() + duration_s

    async def worker(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await http.get(url)
            response.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as http:
        began = time.monotonic()
        await asyncio.gather(*(worker(http) for _ in range(connections)))
        elapsed = time.monotonic() - began
    return {
        "rps": len(times) / elapsed,
        "p50_ms": statistics.median(times),
        "p99_ms": percentile(times, 99),
    }


# -- report --------------------------------------------------------------------------------------


def table(
    source_size: int,
    served: dict[str, tuple[list[float], int]],
    alone: dict[tuple[str, str], Timing],
    hits: dict[str, dict[str, float]],
) -> str:
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} / {percentile(values, 99):.0f}"

    lines = [
        f"Source: {WIDTH}x{HEIGHT} PNG, {source_size / 1e6:.2f} MB; variants 400 px wide, q=80.",
        "",
        "| format | first transform via HTTP, p50 / p99 (ms) | 400 px bytes | saved vs original |",
        "|---|---|---|---|",
    ]
    for fmt, (times, size) in served.items():
        saved = 100 * (1 - size / source_size)
        lines.append(f"| {fmt} | {ms(times)} | {size:,} | {saved:.1f} % |")
    names = sorted({name for name, _ in alone})
    lines += [
        "",
        "| format | "
        + " | ".join(f"{n} wall p50 / p99 (ms) | {n} CPU p50 (ms)" for n in names)
        + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for fmt in formats():
        cells = []
        for name in names:
            wall, cpu = alone.get((name, fmt), ([], []))
            cells += [ms(wall), f"{statistics.median(cpu):.0f}"] if wall else ["—", "—"]
        lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| hit (one worker, keep-alive) | req/s | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
    ]
    for name, row in hits.items():
        lines.append(f"| {name} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    return "\n".join(lines)


def measure(processes: Processes, workdir: Path, duration_s: float, samples: int) -> dict[str, Any]:
    """The whole measurement; every server goes into `processes` (the caller stops them).

    Returns the source size, the per-format results and the markdown `table`; used by this
    module's command and by `python -m loadtests.bench --only variants`.
    """
    source = photo_like_png()
    print(f"variants: source {len(source):,} bytes", file=sys.stderr)
    alone = in_process(source, samples)
    env = clean_env(
        DATA_DIR=str(workdir / "variants-data"),
        GENERATOR="offline",
        LOG_LEVEL="warning",
        # Every cold sample is a new variant of the one source image: room for all of them.
        MAX_VARIANTS_PER_IMAGE=str(max(100, 8 * samples + 50)),
    )
    key = run_banatie(["keys", "create", "--name", "bench"], env).strip().splitlines()[0]
    server, base = start_banatie(processes, "variants-serve", "serve", env)
    try:
        uploaded = httpx.post(
            base + "/api/v1/images/upload",
            headers={"X-API-Key": key},
            files={"file": ("source.png", source, "image/png")},
            timeout=60,
        )
        uploaded.raise_for_status()
        image_id = uploaded.json()["data"]["id"]
        served = asyncio.run(first_transforms(base, image_id, samples))
        url = f"{base}/cdn/{ORG}/{PROJECT}/img/{image_id}"
        hits = {
            "400 px WebP variant": hit_throughput(
                url + "?w=400&format=webp", duration_s, server.pid
            ),
            f"original PNG ({len(source) / 1e6:.1f} MB)": hit_throughput(
                url, duration_s, server.pid
            ),
        }
    finally:
        processes.stop(server)
    return {
        "source_bytes": len(source),
        "samples": samples,
        "hit_duration_s": duration_s,
        "first_transform_ms": {
            fmt: {
                "p50": statistics.median(times),
                "p99": percentile(times, 99),
                "bytes_400px": size,
                "saved_pct": 100 * (1 - size / len(source)),
            }
            for fmt, (times, size) in served.items()
        },
        "hits": hits,
        "table": table(len(source), served, alone, hits),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per hit run")
    parser.add_argument("--samples", type=int, default=30, help="cold variants per format")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="banatie-variants-") as tmp:
        processes = Processes(Path(tmp))
        try:
            found = measure(processes, Path(tmp), args.duration, args.samples)
        finally:
            processes.stop_all()
    print(found["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
