"""Soak: the split layout under steady page-view traffic for minutes; errors and edge RSS.

    python -m loadtests.soak --minutes 10          # updates the Soak block of docs/benchmarks.md
    python -m loadtests.soak --minutes 1 --no-docs # a smoke run

Starts redis-server, the fake Gemini (fast answers: the locust prompts carry no delay= or
bytes=), `banatie origin` and two `banatie edge` processes sharing Redis (SERVICE_TOKEN,
ORIGIN_URL), then one headless locust process per edge (PageViewUser, `--users` each, its own
`--csv`), all on free loopback ports, each in its own process group, stopped at the end (also
on errors and Ctrl-C). Every 10 s it reads each banatie process's VmRSS from /proc. At the end it
prints requests, failures, req/s and p50/p99 per edge from locust's CSV stats, and each edge's
RSS at the end of warm-up against the end of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from loadtests import report
from loadtests.bench import banatie_env, http_get, loadavg, machine, say
from loadtests.processes import (
    PROJECT_ROOT,
    Process,
    Processes,
    clean_env,
    need,
    rss_bytes,
    run_banatie,
    start_banatie,
    start_redis,
    start_stub,
)

MB = 1024 * 1024
SAMPLE_EVERY_S = 10.0
START = "<!-- soak:results:start -->"
END = "<!-- soak:results:end -->"
# Rows of locust's stats CSV that are real HTTP requests (PAGE rows are whole page views).
IMAGE_ROWS = ("live image (known)", "live image (new)")


def locust_stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {f"{row['Type']} {row['Name']}".strip(): row for row in csv.DictReader(f)}


def summarise(rows: dict[str, dict[str, str]], seconds: float) -> dict[str, Any]:
    """Image requests (GET rows) and page views from one locust process's `_stats.csv`."""
    out: dict[str, Any] = {"requests": 0, "failures": 0, "rows": {}}
    for row in rows.values():
        name = row["Name"]
        if name == "Aggregated":
            continue
        count, failures = int(row["Request Count"]), int(row["Failure Count"])
        out["rows"][name] = {
            "requests": count,
            "failures": failures,
            "rps": count / seconds,
            "p50_ms": float(row["50%"] or "nan"),
            "p99_ms": float(row["99%"] or "nan"),
        }
        if name in IMAGE_ROWS:
            out["requests"] += count
            out["failures"] += failures
    out["rps"] = out["requests"] / seconds
    return out


def prefill(edges: list[str], prompt_set: str, prompts: int = 1000) -> dict[str, int]:
    """Ask for every known prompt of the set once, 8 at a time over both edges.

    The URLs are locustfile.live_url's (that module imports locust: not importable here). A
    cold start with 300 browser connections would be 300 distinct misses at once, far over
    the origin's MAX_CONCURRENT_GENERATIONS (16), answered 503 + Retry-After by design; the
    soak is about the steady state, so the known prompts exist before the load starts.
    """

    def one(rank: int) -> int:
        prompt = quote(f"locust {prompt_set} prompt {rank}", safe="")
        base = edges[rank % len(edges)]
        return http_get(f"{base}/cdn/default/default/live/loadtest?prompt={prompt}")[0]

    statuses: dict[str, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for status in pool.map(one, range(prompts)):
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    if set(statuses) != {"200"}:
        raise RuntimeError(f"prefill answered {statuses}")
    return statuses


def start_locust(
    processes: Processes,
    name: str,
    host: str,
    users: int,
    seconds: int,
    csv_prefix: Path,
    env: dict,
) -> Process:
    command = [
        str(PROJECT_ROOT / ".venv" / "bin" / "locust")
        if (PROJECT_ROOT / ".venv" / "bin" / "locust").exists()
        else need("locust", "locust"),
        "-f", str(PROJECT_ROOT / "loadtests" / "locustfile.py"),
        "--headless", "-H", host, "-u", str(users), "-r", str(max(1, users // 5)),
        "-t", f"{seconds}s", "--stop-timeout", "10", "--csv", str(csv_prefix), "--only-summary",
        "--loglevel", "WARNING", "PageViewUser",
    ]  # fmt: skip
    return processes.start(name, command, env)


def soak(args: argparse.Namespace, processes: Processes) -> dict[str, Any]:
    workdir = processes.workdir
    _, stub_url = start_stub(processes)
    _, redis_url = start_redis(processes)
    data = workdir / "split"
    env = banatie_env(
        stub_url,
        data,
        REDIS_URL=redis_url,
        SERVICE_TOKEN=secrets.token_hex(16),
        MAX_CONCURRENT_GENERATIONS=str(args.max_generations),
        L1_BYTES=str(int(args.l1_mb * MB)),
    )
    run_banatie(["keys", "create", "--name", "soak"], env)  # the default org and project
    origin, origin_url = start_banatie(processes, "origin", "origin", env)
    edge_env = {**env, "ORIGIN_URL": origin_url, "OBJECTS_DIR": str(data / "objects")}
    edges = [start_banatie(processes, f"edge-{i}", "edge", edge_env) for i in (1, 2)]
    watched = {"origin": origin, "edge 1": edges[0][0], "edge 2": edges[1][0]}
    seconds = int(args.minutes * 60)
    prompt_set = f"soak-{uuid.uuid4().hex[:8]}"  # fresh per run
    locust_env = clean_env(BANATIE_PROMPT_SET=prompt_set, BANATIE_NEW_SHARE=str(args.new_share))
    began = time.monotonic()
    prefill([base for _, base in edges], prompt_set)
    prefill_s = time.monotonic() - began
    say(f"soak: prefilled 1,000 known prompts in {prefill_s:.1f} s")
    say(
        f"soak: origin {origin_url}, edges {edges[0][1]} {edges[1][1]}; locust PageViewUser "
        f"{args.users} users per edge for {args.minutes:g} min, prompt set {prompt_set}"
    )
    locusts = [
        start_locust(
            processes, f"locust-{i}", base, args.users, seconds, workdir / f"locust-{i}", locust_env
        )
        for i, (_, base) in ((1, edges[0]), (2, edges[1]))
    ]
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    next_at = started
    while any(p.alive() for p in locusts):
        now = time.monotonic()
        if now >= next_at:
            sample: dict[str, Any] = {"t_s": now - started}
            for label, process in watched.items():
                if not process.alive():
                    raise RuntimeError(f"{label} died; {process.log}:\n{process.tail()}")
                sample[label] = rss_bytes(process.pid)
            samples.append(sample)
            if len(samples) % 6 == 1:
                say(
                    f"  t={sample['t_s']:4.0f} s  "
                    + "  ".join(f"{k} {sample[k] / MB:.1f} MB" for k in watched)
                )
            next_at += SAMPLE_EVERY_S
        if now - started > seconds + 120:
            raise RuntimeError("locust did not stop two minutes after its run time")
        # Until the next sample is due, or sooner if a locust ends.
        running = next(p for p in locusts if p.alive())
        with contextlib.suppress(subprocess.TimeoutExpired):
            running.popen.wait(timeout=max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - started
    sample = {"t_s": elapsed, **{k: rss_bytes(p.pid) for k, p in watched.items()}}
    samples.append(sample)
    per_edge = {}
    for i, process in enumerate(locusts, 1):
        stats = workdir / f"locust-{i}_stats.csv"
        if not stats.exists():
            raise RuntimeError(f"locust-{i} wrote no stats; {process.log}:\n{process.tail()}")
        per_edge[f"edge {i}"] = summarise(locust_stats(stats), seconds)
        per_edge[f"edge {i}"]["exit"] = process.popen.returncode
        per_edge[f"edge {i}"]["summary"] = process.tail(12)
    stub = urllib.request.urlopen(stub_url + "/stats", timeout=10).read()
    l1 = {f"edge {i}": l1_metrics(base) for i, (_, base) in ((1, edges[0]), (2, edges[1]))}
    return {
        "l1": l1,
        "minutes": args.minutes,
        "users_per_edge": args.users,
        "new_share": args.new_share,
        "seconds": seconds,
        "per_edge": per_edge,
        "samples": samples,
        "model_calls": json.loads(stub)["generations"],
        "prefill_s": prefill_s,
        "max_generations": args.max_generations,
        "l1_mb": args.l1_mb,
    }


def l1_metrics(base: str) -> dict[str, float]:
    """The edge's in-process cache gauges from its /metrics (bytes, entries, evictions)."""
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        for name in ("banatie_l1_bytes", "banatie_l1_entries", "banatie_l1_evictions_total"):
            if line.startswith(name + " "):
                found[name.removeprefix("banatie_l1_")] = float(line.split()[1])
    return found


def slope_mb_per_min(samples: list[dict[str, Any]], label: str, after_s: float) -> float:
    """Least-squares slope of one process's RSS after warm-up, in MB a minute."""
    points = [(s["t_s"] / 60, s[label] / MB) for s in samples if s["t_s"] >= after_s - 1]
    if len(points) < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else float("nan")


def rss_at(samples: list[dict[str, Any]], t_s: float) -> dict[str, Any]:
    """The first sample at or after `t_s` (the last one if the run was shorter)."""
    for sample in samples:
        if sample["t_s"] >= t_s - 1:
            return sample
    return samples[-1]


def markdown(found: dict[str, Any], command: str, started: str, m: dict, load: str) -> str:
    edges = found["per_edge"]
    warm = rss_at(found["samples"], found["warmup_s"])
    last = found["samples"][-1]
    requests = sum(e["requests"] for e in edges.values())
    failures = sum(e["failures"] for e in edges.values())
    lines = [
        f"Run `{command}` at {started}: {m['nproc']} cores ({m['cpu']}, shared with the load "
        f"generators), loopback, load average {load}. Two locust processes, one per edge, "
        f"PageViewUser with {found['users_per_edge']} users each (20 live images a page, 6 at a "
        f"time, 1-3 s between pages, Zipf over 1,000 prompts, {found['new_share']:.0%} new), "
        f"{found['minutes']:g} min; the 1,000 known prompts were generated first "
        f"({found['prefill_s']:.0f} s, 8 at a time), so the new ones are the only misses; "
        f"the fake Gemini answers at once ({found['model_calls']:,} model calls in all, "
        f"prefill included); MAX_CONCURRENT_GENERATIONS={found['max_generations']}; "
        f"L1_BYTES={found['l1_mb']:g} MB per edge (small on purpose: the in-process cache "
        f"fills during warm-up and evicts from then on, so a flat RSS means no leak beside it).",
        "",
        f"**{requests:,} image requests, {failures} failures, "
        f"{requests / found['seconds']:,.0f} req/s in all.**",
        "",
        "| edge | row | requests | failures | req/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, e in edges.items():
        lines.append(
            f"| {label} | **all images** | {e['requests']:,} | {e['failures']} | "
            f"{e['rps']:,.1f} | | |"
        )
        for name, row in sorted(e["rows"].items()):
            lines.append(
                f"| {label} | {name} | {row['requests']:,} | {row['failures']} | "
                f"{row['rps']:,.1f} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} |"
            )
    lines += [
        "",
        f"RSS (VmRSS) at the end of warm-up ({warm['t_s']:.0f} s) and at the end "
        f"({last['t_s']:.0f} s):",
        "",
        "| process | after warm-up | at the end | change | slope after warm-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in ("edge 1", "edge 2", "origin"):
        a, b = warm[label], last[label]
        slope = slope_mb_per_min(found["samples"], label, found["warmup_s"])
        lines.append(
            f"| {label} | {a / MB:.1f} MB | {b / MB:.1f} MB | {(b - a) / MB:+.1f} MB "
            f"({100 * (b - a) / a:+.1f} %) | {slope:+.2f} MB/min |"
        )
    lines += ["", "In-process cache at the end (from each edge's /metrics):", ""]
    for label, l1 in found["l1"].items():
        lines.append(
            f"- {label}: {l1.get('bytes', 0) / MB:.2f} MB in {l1.get('entries', 0):,.0f} "
            f"entries, {l1.get('evictions_total', 0):,.0f} evictions"
        )
    lines += [
        "",
        "RSS over time (MB, one row a minute):",
        "",
        "| t | edge 1 | edge 2 | origin |",
        "|---:|---:|---:|---:|",
    ]
    shown = -60.0
    for s in found["samples"]:
        if s["t_s"] - shown >= 59 or s is last:
            shown = s["t_s"]
            lines.append(
                f"| {s['t_s'] / 60:.1f} min | {s['edge 1'] / MB:.1f} | {s['edge 2'] / MB:.1f} | "
                f"{s['origin'] / MB:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="run time (10)")
    parser.add_argument("--users", type=int, default=25, help="locust users per edge (25)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up minutes (2)")
    parser.add_argument(
        "--new-share", type=float, default=0.05, help="share of never-seen prompts (0.05)"
    )
    parser.add_argument(
        "--max-generations",
        type=int,
        default=64,
        help="MAX_CONCURRENT_GENERATIONS for the banatie processes (64; the default 16 "
        "protects a real model's quota, and here turns bursts of new prompts into 503s)",
    )
    parser.add_argument(
        "--l1-mb",
        type=float,
        default=1.0,
        help="L1_BYTES of each edge in MB (1: full within the warm-up, so RSS must plateau; "
        "the default 256 MB would take hours of new prompts to fill)",
    )
    parser.add_argument("--no-docs", dest="docs", action="store_false", help="leave docs/ alone")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    need("redis-server", "redis-server")
    command = "python -m loadtests.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="banatie-soak-"))
    processes = Processes(workdir)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    failed = True
    try:
        found = soak(args, processes)
        failed = False
    finally:
        processes.stop_all()
        if failed:
            say(f"FAILED; logs kept in {workdir}")
    found["warmup_s"] = args.warmup * 60
    for label, e in found["per_edge"].items():
        print(f"\n{label} (locust exit {e['exit']}):\n{e['summary']}")
    text = markdown(found, command.strip(), started, machine(), f"{load_before} → {loadavg()}")
    print("\n" + text)
    if args.docs:
        path = PROJECT_ROOT / "docs" / "benchmarks.md"
        report.update_docs(path, text, START, END, "## Soak")
        say(f"wrote the Soak block of {path}")
    if args.keep:
        say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    failures = sum(e["failures"] for e in found["per_edge"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
