"""Run wrk against one URL and read its summary, with the server's CPU time per request."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from loadtests.processes import cpu_seconds, need

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # socket errors + non-2xx/3xx answers
    server_cpu_us: float | None  # server CPU time per request (all its threads)
    transfer_per_s: str

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.requests > 0


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(output: str) -> dict[str, float | int | str]:
    found: dict[str, float | int | str] = {}
    for pct, key in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", output, re.M)
        found[key] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    if m is None:
        raise ValueError(f"unreadable wrk output:\n{output}")
    found["requests"] = int(m.group(1))
    found["seconds"] = _ms(m.group(2) + m.group(3)) / 1000
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    found["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Transfer/sec:\s+(\S+)", output)
    found["transfer_per_s"] = m.group(1) if m else ""
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        errors += int(m.group(1))
    found["errors"] = errors
    return found


def run(
    url: str,
    duration_s: float,
    connections: int,
    threads: int,
    server_pid: int | None = None,
    script: str | None = None,
) -> WrkResult:
    """One wrk run; `server_pid` (the process doing the serving) gets its CPU time measured;
    `script`, a wrk Lua script (e.g. the request order of loadtests/longtail.py)."""
    command = [
        need("wrk", "wrk"),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        *(["-s", script] if script else []),
        url,
    ]
    before = cpu_seconds(server_pid) if server_pid else 0.0
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    after = cpu_seconds(server_pid) if server_pid else 0.0
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    found = parse(done.stdout)
    requests = int(found["requests"])
    cpu_us = (after - before) / requests * 1e6 if server_pid and requests else None
    return WrkResult(
        requests=requests,
        seconds=float(found["seconds"]),
        rps=float(found["rps"]),
        p50_ms=float(found["p50_ms"]),
        p90_ms=float(found["p90_ms"]),
        p99_ms=float(found["p99_ms"]),
        errors=int(found["errors"]),
        server_cpu_us=cpu_us,
        transfer_per_s=str(found["transfer_per_s"]),
    )
