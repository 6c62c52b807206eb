"""The servers a benchmark runs: each a subprocess in its own process group, on a free port.

Everything started here is registered with a `Processes` set, whose `stop_all` (called from
a `finally`, and on SIGTERM) ends every group, so no nginx or redis outlives a failed run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
T = TypeVar("T")

# Settings a caller's environment must not leak into a benchmark server.
_BANATIE_ENV = (
    "DATA_DIR", "DATABASE_URL", "OBJECTS_DIR", "S3_ENDPOINT", "S3_BUCKET", "S3_REGION",
    "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "REDIS_URL", "GEMINI_API_KEY", "GEMINI_BASE_URL", "GEMINI_IMAGE_MODEL", "GEMINI_TEXT_MODEL",
    "GENERATOR", "GENERATION_TIMEOUT_S", "GENERATION_RETRIES", "PUBLIC_URL", "HOST", "PORT",
    "ORIGIN_URL", "SERVICE_TOKEN", "METRICS_TOKEN", "BOOTSTRAP_DEFAULT_PROJECT",
    "KEY_BUDGET_PER_HOUR", "IP_BUDGET_PER_HOUR", "DEFAULT_SCOPE_LIMIT", "TRUSTED_PROXIES",
    "L1_BYTES", "L1_MAX_ENTRY_BYTES", "MAX_CONCURRENT_GENERATIONS", "LOCK_LEASE_MS",
    "KEY_CACHE_TTL_S", "FAILURE_TTL_S", "LOG_LEVEL", "LOG_FORMAT", "MAX_BODY_BYTES",
    "MAX_IMAGE_PIXELS", "MAX_META_BYTES", "MAX_UPLOAD_BYTES", "MAX_VARIANT_DIMENSION",
    "VARIANT_QUALITY", "VARIANT_QUEUE", "VARIANT_WORKERS", "DISK_CACHE_DIR", "DISK_CACHE_BYTES",
)  # fmt: skip


class StartError(RuntimeError):
    """A server did not come up; the message ends with the tail of its log."""


class TimedOut(RuntimeError):
    """A condition `poll` waited on did not come true in time."""


def poll(condition: Callable[[], T], what: str, timeout_s: float, poll_s: float = 0.05) -> T:
    """`condition()`'s first true value, polled (for another process's state, which no
    event tells); TimedOut naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = condition()
        if held:
            return held
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**values: str) -> dict[str, str]:
    """os.environ without any banatie setting, plus `values`, with the project importable."""
    env = {k: v for k, v in os.environ.items() if k not in _BANATIE_ENV}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env.update(values)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Process:
    """A subprocess in a new session (its own process group), logging to a file."""

    def __init__(
        self, name: str, command: list[str], log: Path, env: dict[str, str], cwd: Path
    ) -> None:
        self.name = name
        self.command = command
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(text)

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
        try:
            poll(lambda: not self.alive() or ready(), f"{self.name} to be ready", timeout_s)
        except TimedOut as e:
            raise StartError(f"{e}; {self.log}:\n{self.tail()}") from None
        if not self.alive():
            raise StartError(
                f"{self.name} exited with {self.popen.returncode}; {self.log}:\n{self.tail()}"
            )

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the whole group, SIGKILL after `timeout_s`."""
        if self.popen.poll() is not None:
            self._reap_group()
            return
        self._signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.popen.wait()
        self._reap_group()

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def _reap_group(self) -> None:
        # Workers the leader left behind (nginx workers, uvicorn children) go too.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Processes:
    """Every process of a run; `stop_all` ends them in reverse start order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._running: list[Process] = []

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path = PROJECT_ROOT,
    ) -> Process:
        """Start `command` in `cwd` (`python -m` imports from there first)."""
        log = self.workdir / "logs" / f"{name}.log"
        process = Process(name, command, log, env if env is not None else clean_env(), cwd)
        self._running.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        while self._running:
            process = self._running.pop()
            try:
                process.stop()
            except Exception as e:  # keep stopping the others
                print(f"could not stop {process.name}: {e}", file=sys.stderr)


# -- readiness --------------------------------------------------------------------------------


def answers_http(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            urllib.request.urlopen(url, timeout=2).close()
        except urllib.error.HTTPError:
            return True  # any HTTP answer: it is up
        except OSError:
            return False
        return True

    return ready


def answers_redis(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return ready


def need(binary: str, package: str) -> str:
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(f"{binary} not found: apt-get install -y {package}")
    return found


# -- the servers --------------------------------------------------------------------------------


def start_redis(processes: Processes, port: int | None = None) -> tuple[Process, str]:
    port = port or free_port()
    folder = processes.workdir / f"redis-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        need("redis-server", "redis-server"),
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--dir", str(folder),
    ]  # fmt: skip
    process = processes.start(f"redis-{port}", command)
    process.wait_until(answers_redis(port))
    return process, f"redis://127.0.0.1:{port}/0"


def start_stub(processes: Processes) -> tuple[Process, str]:
    """The fake Gemini (loadtests/gemini_stub.py) in its own process."""
    port = free_port()
    process = processes.start(
        "gemini-stub", [sys.executable, "-m", "loadtests.gemini_stub", "--port", str(port)]
    )
    url = f"http://127.0.0.1:{port}"
    process.wait_until(answers_http(url + "/stats"))
    return process, url


def start_bare(processes: Processes, folder: Path) -> tuple[Process, str]:
    """loadtests/bare_asgi.py serving the files of `folder`: uvicorn's own floor."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "loadtests.bare_asgi",
        "--port",
        str(port),
        "--folder",
        str(folder),
    ]
    process = processes.start("bare-asgi", command)
    url = f"http://127.0.0.1:{port}"
    process.wait_until(answers_http(url + "/"))
    return process, url


def banatie_command(command: str, port: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "banatie", command, "--port", str(port), f"--workers={workers}"]


def start_banatie(
    processes: Processes,
    name: str,
    command: str,
    env: dict[str, str],
    port: int | None = None,
    workers: int = 1,
) -> tuple[Process, str]:
    """`banatie serve|origin|edge` (one worker by default); returns it and its base URL."""
    port = port or free_port()
    process = processes.start(name, banatie_command(command, port, workers), env)
    url = f"http://127.0.0.1:{port}"
    process.wait_until(answers_http(url + "/health" if command != "edge" else url + "/"))
    return process, url


def run_banatie(args: list[str], env: dict[str, str]) -> str:
    """A one-shot `banatie` command (migrate, keys create); returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "banatie", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"banatie {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


NGINX_CONF = """\
worker_processes 1;
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush {tcp_nopush};
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    types {{ image/png png; }}

    # The same bytes as a static file.
    server {{
        listen 127.0.0.1:{static_port};
        root {dir}/static;
    }}

    # What a user would deploy instead of the edge: nginx caching `banatie serve`.
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=banatie:10m max_size=1g
                     inactive=7d use_temp_path=off;
    upstream banatie {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location /cdn/ {{
            proxy_pass http://banatie;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache banatie;
            proxy_cache_lock on;
            proxy_cache_valid 200 7d;
            add_header X-Proxy-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def start_nginx(
    processes: Processes, static: dict[str, bytes], upstream_port: int, tcp_nopush: bool = True
) -> tuple[Process, str, str]:
    """nginx (one worker): static files and a proxy_cache in front of `upstream_port`.

    Returns the process and the base URLs of the static and proxy servers. (`tcp_nopush on`
    stalls proxy_cache about 40 ms a response on many distinct keys: the long tail turns it
    off.)
    """
    binary = need("nginx", "nginx")
    folder = processes.workdir / "nginx"
    for sub in ("static", "tmp", "cache"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, body in static.items():
        (folder / "static" / name).write_bytes(body)
    static_port, proxy_port = free_port(), free_port()
    conf = folder / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            dir=folder,
            static_port=static_port,
            proxy_port=proxy_port,
            upstream_port=upstream_port,
            tcp_nopush="on" if tcp_nopush else "off",
        )
    )
    process = processes.start(
        "nginx", [binary, "-c", str(conf), "-p", str(folder), "-e", str(folder / "error.log")]
    )
    static_url = f"http://127.0.0.1:{static_port}"
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    process.wait_until(answers_http(static_url + "/"))
    process.wait_until(answers_http(proxy_url + "/"))
    return process, static_url, proxy_url


def nginx_worker(process: Process) -> int:
    """The pid of the (single) nginx worker, whose CPU time is the server's."""

    def worker() -> int | None:
        for pid in children(process.pid):  # also the cache manager and loader
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"worker process" in f.read():
                        return pid
            except OSError:
                continue
        return None

    try:
        return poll(worker, "an nginx worker process", 10)
    except TimedOut as e:
        raise StartError(f"nginx: {e}") from None


def start_moto(processes: Processes) -> tuple[Process, str]:
    """moto's S3 server (an S3-protocol server of its own process); its log lists every
    request it answered, which is how object-store reads are counted."""
    port = free_port()
    env = clean_env(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = processes.start(f"moto-{port}", command, env)
    url = f"http://127.0.0.1:{port}"
    process.wait_until(answers_http(url + "/moto-api/"))
    return process, url
