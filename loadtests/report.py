"""Benchmark results as markdown tables, a chart, and the results section of docs/benchmarks.md."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

KB = 1024
MB = 1024 * 1024
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
# The variants section has its own block: `--only variants` must not wipe the hit-path results.
VARIANTS_START = "<!-- bench:variants:start -->"
VARIANTS_END = "<!-- bench:variants:end -->"

# Targets to meet; each is checked against the measured numbers in `targets`.
L1_50KB_VS_STATIC = 0.5
L1_300KB_VS_STATIC = 0.9
L1_300KB_VS_PROXY = 1.2
HERD_SPREAD_MS = 20.0
MISS_OVERHEAD_P50_MS = 15.0
RSS_ABOVE_BUDGET = 150 * MB


def add_ratios(rows: list[Any]) -> None:
    static = {r.size: r.rps for r in rows if r.target == "nginx static"}
    for row in rows:
        base = static.get(row.size)
        row.ratio_to_static = row.rps / base if base else None


def _rps(rows: list[Any], size: int, target: str) -> float | None:
    for row in rows:
        if row.size == size and row.target == target:
            return row.rps
    return None


def targets(results: Any) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for every target the run has numbers for."""
    out: list[tuple[str, str, str]] = []
    rows = results.rows

    def ratio(size: int, a: str, b: str) -> float | None:
        x, y = _rps(rows, size, a), _rps(rows, size, b)
        return x / y if x and y else None

    checks = (
        (50 * KB, "nginx static", L1_50KB_VS_STATIC, "L1 hit 50 KB ≥ 0.5x nginx static"),
        (300 * KB, "nginx static", L1_300KB_VS_STATIC, "L1 hit 300 KB ≥ 0.9x nginx static"),
        (300 * KB, "nginx proxy_cache → serve", L1_300KB_VS_PROXY,
         "L1 hit 300 KB ≥ 1.2x nginx proxy_cache"),
    )  # fmt: skip
    for size, other, wanted, label in checks:
        found = ratio(size, "edge: L1 hit", other)
        if found is not None:
            out.append((label, f"{found:.2f}x", _met(found >= wanted)))
    for herd in results.herd:
        size = f"{herd['image_bytes'] // KB} KB"
        calls = herd["model_calls"]
        out.append((f"herd ({size}): exactly 1 generation", f"{calls} model call(s)",
                    _met(calls == 1)))  # fmt: skip
        spread = herd["last_after_first_ms"]
        out.append(
            (f"herd ({size}): last follower <= 20 ms after the leader", f"{spread:.1f} ms",
             _met(spread <= HERD_SPREAD_MS))
        )  # fmt: skip
    for miss in results.miss:
        p50 = miss["overhead_p50_ms"]
        out.append(
            (f"miss overhead p50 ≤ 15 ms ({miss['layout']})", f"{p50:.1f} ms",
             _met(p50 <= MISS_OVERHEAD_P50_MS))
        )  # fmt: skip
    for mem in results.memory:
        worst = max(mem["rss_after_pass1_bytes"], mem["rss_after_pass2_bytes"])
        limit = mem["l1_budget_bytes"] + RSS_ABOVE_BUDGET
        out.append(
            (f"RSS ≤ budget + 150 MB ({mem['process']})",
             f"{worst / MB:.0f} MB (limit {limit / MB:.0f} MB)", _met(worst <= limit))
        )  # fmt: skip
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown(results: Any) -> str:
    lines: list[str] = []
    m, v = results.machine, results.versions
    lines += [
        f"Run `{results.command.strip()}` at {results.started}.",
        "",
        f"- Machine: {m['nproc']} cores, {m['cpu']}, {m['memory_gb']} GB, Linux {m['kernel']}; "
        f"load average {results.load_before} before, {results.load_after} after.",
        f"- Versions: Python {v['python']}, uvicorn {v['uvicorn']} (uvloop {v['uvloop']}, "
        f"httptools {v['httptools']}), {v['nginx']}, {v['wrk']}, {v['redis-server']}.",
        f"- wrk: {results.settings['threads']} thread(s), {results.settings['connections']} "
        f"connections, {results.settings['duration_s']:g} s per row after "
        f"{results.settings['warmup_s']:g} s of warm-up; one nginx worker, one banatie worker.",
        "",
    ]
    checks = targets(results)
    if checks:
        lines += ["| target | measured | |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in checks]
        lines.append("")
    if results.rows:
        lines += [
            "### Hit path",
            "",
            "| size | server | req/s | x nginx static | p50 ms | p99 ms | server CPU µs/req |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in results.rows:
            ratio = f"{r.ratio_to_static:.2f}" if r.ratio_to_static is not None else ""
            cpu = f"{r.server_cpu_us:.0f}" if r.server_cpu_us else ""
            errors = f" ({r.errors} errors)" if r.errors else ""
            lines.append(
                f"| {r.size // KB} KB | {r.target}{errors} | {r.rps:,.0f} | {ratio} | "
                f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {cpu} |"
            )
        lines += ["", "![req/s per tier against nginx](bench-hit-path.png)", ""]
    if results.profile:
        p = results.profile
        lines += [
            "### Where an L1 hit's time goes (py-spy)",
            "",
            f"{p['samples']} samples of the L1 edge under wrk (`/{p['route']}`): the share of "
            "samples in which a frame is running (self; `Runner.run` is the loop waiting in "
            "epoll) or is on the stack (the project's own frames).",
            "",
            "| self | frame |",
            "|---:|---|",
        ]
        lines += [f"| {pct:.1f}% | `{frame}` |" for frame, pct in p["self"][:12]]
        lines += ["", "| on the stack | project frame |", "|---:|---|"]
        lines += [f"| {pct:.1f}% | `{frame}` |" for frame, pct in p["total"][:14]]
        lines.append("")
    if results.herd:
        h0 = results.herd[0]
        lines += [
            "### Herd",
            "",
            f"{h0['clients']} identical requests for one new key, written at once over "
            f"{len(h0['per_edge'])} edges ({' + '.join(map(str, h0['per_edge']))} connections); "
            f"the model answers after {h0['model_delay_s']:g} s. Times are taken at the client "
            "(one process on the same cores) when a response's last byte arrives.",
            "",
            "| image | model calls | generation rows | statuses | image ids | model asked after "
            "| first response | last follower after first | p50 after first | per edge |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for h in results.herd:
            per_edge = ", ".join(
                f"{k}: +{v['first_ms']:.0f}..+{v['last_ms']:.0f} ms"
                for k, v in h["by_edge"].items()
            )
            asked = h.get("model_asked_after_s")
            lines.append(
                f"| {h['image_bytes'] // KB} KB | {h['model_calls']} | {h['generation_rows']} | "
                f"{h['statuses']} | {h['image_ids']} | "
                + (f"{asked:.3f} s" if asked is not None else "")
                + f" | {h['first_response_s']:.3f} s | {h['last_after_first_ms']:.1f} ms | "
                f"{h['p50_after_first_ms']:.1f} ms | {per_edge} |"
            )
        lines.append("")
    if results.miss:
        lines += [
            "### Miss overhead",
            "",
            "Overhead = client time minus the model server's own time (the stub's handler). "
            "The last two columns take away the whole generator call as the origin timed it "
            "(Server-Timing `model`): what remains is edge + origin without the google-genai "
            "SDK's request building and its decoding of the ~1.3 MB base64 JSON answer.",
            "",
            "| layout | samples | client p50 ms | model p50 ms | overhead p50 ms | p99 ms "
            "| max ms | generator call p50 ms | beyond the call p50 / p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in results.miss:
            lines.append(
                f"| {x['layout']} | {x['samples']} | {x['client_p50_ms']:.1f} | "
                f"{x['model_p50_ms']:.1f} | {x['overhead_p50_ms']:.1f} | "
                f"{x['overhead_p99_ms']:.1f} | {x['overhead_max_ms']:.1f} | "
                f"{x.get('generator_call_p50_ms', float('nan')):.1f} | "
                f"{x.get('beyond_call_p50_ms', float('nan')):.1f} / "
                f"{x.get('beyond_call_p99_ms', float('nan')):.1f} |"
            )
        lines.append("")
    if results.memory:
        lines += [
            "### Memory",
            "",
            "| process | keys x size | L1 budget | RSS at start | after 1st pass "
            "| after 2nd pass | 1st pass req/s |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for x in results.memory:
            lines.append(
                f"| {x['process']} | {x['keys']:,} x {x['image_bytes'] // KB} KB | "
                f"{x['l1_budget_bytes'] // MB} MB | {x['rss_start_bytes'] / MB:.0f} MB | "
                f"{x['rss_after_pass1_bytes'] / MB:.0f} MB | "
                f"{x['rss_after_pass2_bytes'] / MB:.0f} MB | "
                f"{x['pass1_rps']:,.0f} |"
            )
        lines.append("")
    if results.notes:
        lines += ["Notes from the run:", ""] + [f"- {n}" for n in results.notes] + [""]
    return "\n".join(lines)


def chart(results: Any, path: Path) -> None:
    """Grouped bars: req/s per server, one group per image size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.size for r in results.rows})
    servers = list(dict.fromkeys(r.target for r in results.rows))
    width = 0.8 / len(servers)
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    for i, server in enumerate(servers):
        xs, ys = [], []
        for j, size in enumerate(sizes):
            rps = _rps(results.rows, size, server)
            if rps is not None:
                xs.append(j + (i - (len(servers) - 1) / 2) * width)
                ys.append(rps)
        bars = ax.bar(xs, ys, width * 0.95, label=server)
        ax.bar_label(bars, labels=[f"{y / 1000:.1f}k" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(sizes)), [f"{s // KB} KB" for s in sizes])
    ax.set_ylabel("requests per second")
    ax.set_title(
        f"Hit path, one worker each, wrk -t{results.settings['threads']} "
        f"-c{results.settings['connections']} ({results.machine['nproc']} cores, shared)"
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def update_docs(
    path: Path, section: str, start: str = START, end: str = END, heading: str = "## Results"
) -> None:
    """Replace the text between two markers (append `heading` and the markers if missing)."""
    block = f"{start}\n\n{section.rstrip()}\n\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n" + block + "\n"
    path.write_text(text)


def variants_markdown(results: Any) -> str:
    """The generated variants block: loadtests/variants_bench.py's table, with the run's context."""
    v, m = results.variants, results.machine
    return "\n".join(
        [
            f"Run `{results.command.strip()}` at {results.started}; {m['nproc']} cores, "
            f"{m['cpu']}, load average {results.load_before} before, {results.load_after} after. "
            f"{v['samples']} cold variants per format (widths 400, 401, ...), each timed at the "
            f"client through HTTP; hits: wrk on one worker for {v['hit_duration_s']:g} s.",
            "",
            v["table"],
        ]
    )


def summarise_profile(raw: str, top: int = 20) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks → the frames with the largest self and total shares."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return {"samples": 0, "self": [], "total": []}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, 100 * n / samples) for frame, n in counter.most_common(top)]

    # On the stack: the project's own frames (the process start and the loop say nothing).
    ours = Counter({f: n for f, n in total.items() if f.split("(", 1)[-1].startswith(_OURS)})
    return {"samples": samples, "self": share(own), "total": share(ours)}


_OURS = ("edge/app", "banatie/", "cache/", "origin/")
_ROOT = str(Path(__file__).resolve().parent.parent)


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` → `func (pkg/mod.py:12)`."""
    frame = frame.replace(f"({_ROOT}/", "(")
    return re.sub(r"\((?:[^()]*/site-packages/|[^()]*/python3\.\d+/)", "(", frame)
