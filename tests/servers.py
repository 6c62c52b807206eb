"""Real Redis, PostgreSQL and S3 (moto) servers for the tests, each private, on a free port.

Plain classes and functions; tests/conftest.py turns them into fixtures. A missing binary
fails the run with the package to install: these tests are never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url

from cache.objects.s3 import S3Store
from loadtests.processes import free_port
from tests.waiting import wait_until

START_TIMEOUT_S = 30.0


def _wait_for(ready: Callable[[], bool], what: str, log: Path | None = None) -> None:
    wait_until(ready, f"{what} to start", START_TIMEOUT_S, detail=lambda: _tail(log))


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(text)


def _stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server without persistence; stop() and start() keep the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server not found: apt-get install redis-server")
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="banatie-redis-"))
        self.log = self.dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        command = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.dir),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        _wait_for(self.ping, f"redis-server on port {self.port}", self.log)

    def stop(self) -> None:
        _stop_process(self._process)
        self._process = None

    def close(self) -> None:
        self.resume()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and every command waits, as on a stalled server."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: gone at once, with everything it held (start() brings it back empty)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def ping(self) -> bool:
        """True when the server answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Redis is down inside the block (a clean stop) and back, empty, after it."""
        with self._outage(self.stop, self.start):
            yield

    @contextlib.contextmanager
    def killed(self) -> Iterator[None]:
        """Redis is gone inside the block (`kill`) and back, empty, after it."""
        with self._outage(self.kill, self.start):
            yield

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Redis is stalled inside the block (`pause`) and answers again after it."""
        with self._outage(self.pause, self.resume):
            yield

    @contextlib.contextmanager
    def writes_paused(self, longest_s: float) -> Iterator[None]:
        """CLIENT PAUSE WRITE inside the block (for `longest_s` at most): writes wait, reads
        are answered."""
        with redis.Redis.from_url(self.url) as r:
            pause = functools.partial(r.client_pause, int(longest_s * 1000), all=False)
            with self._outage(pause, r.client_unpause):
                yield

    @staticmethod
    @contextlib.contextmanager
    def _outage(begin: Callable[[], object], end: Callable[[], object]) -> Iterator[None]:
        begin()
        try:
            yield
        finally:
            end()


# -- PostgreSQL -------------------------------------------------------------------------------


def _postgres_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    pytest.fail(f"{name} not found: apt-get install postgresql")


class PostgresServer:
    """A throwaway cluster in a temp dir (run as the postgres user when we are root)."""

    database = "banatie_test"

    def __init__(self, port: int | None = None) -> None:
        self.initdb = _postgres_binary("initdb")
        self.pg_ctl = _postgres_binary("pg_ctl")
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="banatie-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres = False
        if os.geteuid() == 0:
            # initdb refuses to run as root.
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("user postgres not found: apt-get install postgresql")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as_postgres = True
        self._running = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(int(START_TIMEOUT_S)), "start",
        )  # fmt: skip
        self._running = True
        base = make_url(self.url).set(database="postgres").render_as_string(hide_password=False)
        _run_sql(base, f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        if self._running:
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
            self._running = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, *command: str) -> None:
        full = list(command)
        if self._as_postgres:
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser:
                full = [runuser, "-u", "postgres", "--", *command]
            else:
                full = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        done = subprocess.run(full, cwd=self.dir, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(
                f"{shlex.join(full)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                f"{_tail(self.log)}"
            )


def create_database(url: str) -> str:
    """A new empty database on the server `url` points at; returns its asyncpg URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _run_sql(url, f'CREATE DATABASE "{name}"')
    return (
        make_url(url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


def drop_database(url: str) -> None:
    """Drop the database `url` names, closing any connections still open to it."""
    target = make_url(url)
    maintenance = target.set(database="postgres").render_as_string(hide_password=False)
    _run_sql(maintenance, f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql", "postgres://"))


def asyncpg_url(url: str) -> str:
    """The same URL in the form SQLAlchemy's asyncpg dialect wants."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _run_sql(url: str, *statements: str) -> None:
    """Run statements with asyncpg on a thread of its own, so any caller (sync or async) can."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> None:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(run())).result()


# -- S3 (moto) --------------------------------------------------------------------------------

# moto accepts any credentials; boto3 only needs some.
S3_REGION = "us-east-1"
S3_ACCESS_KEY_ID = os.environ.get("S3_ACCESS_KEY_ID") or os.environ.get("AWS_ACCESS_KEY_ID", "test")
S3_SECRET_ACCESS_KEY = os.environ.get("S3_SECRET_ACCESS_KEY") or os.environ.get(
    "AWS_SECRET_ACCESS_KEY", "test"
)


class MotoServer:
    """moto's S3 server in a subprocess (its own GIL, like a real endpoint)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="banatie-moto-"))
        self.log = self.dir / "moto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
        }
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=env
            )
        _wait_for(self._answers, f"moto server on port {self.port}", self.log)

    def stop(self) -> None:
        _stop_process(self._process)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            pytest.fail(f"moto server exited with {self._process.returncode}{_tail(self.log)}")
        try:
            urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is up
        except OSError:
            return False
        return True


def new_bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    """Environment for Settings.from_env (or a `banatie serve` subprocess) using this bucket."""
    return {
        "S3_ENDPOINT": endpoint,
        "S3_BUCKET": bucket,
        "S3_REGION": S3_REGION,
        "S3_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
    }


def s3_store_for(endpoint: str, bucket: str) -> S3Store:
    """An S3Store on `bucket`, credentials passed explicitly (the environment is left alone)."""
    return S3Store(
        bucket=bucket,
        endpoint=endpoint,
        region=S3_REGION,
        access_key_id=S3_ACCESS_KEY_ID,
        secret_access_key=S3_SECRET_ACCESS_KEY,
    )


# -- Redis Cluster ----------------------------------------------------------------------------


class RedisClusterServer:
    """Three private redis-server masters in cluster mode, joined by `redis-cli --cluster create`.

    Each node gets its own cluster-bus port (`cluster-port`), so no port + 10000 arithmetic can
    land on a taken or invalid port.
    """

    def __init__(self, masters: int = 3) -> None:
        self.binary = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.binary is None or self.cli is None:
            pytest.fail("redis-server / redis-cli not found: apt-get install redis-server")
        self.ports = [free_port() for _ in range(masters)]
        self.dir = Path(tempfile.mkdtemp(prefix="banatie-redis-cluster-"))
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A `redis+cluster://` URL naming the first node (the client discovers the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            command = [
                str(self.binary),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()),
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(node_dir),
            ]  # fmt: skip
            with (node_dir / "redis.log").open("ab") as log:
                self._processes.append(
                    subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=node_dir)
                )
        for port in self.ports:
            _wait_for(lambda p=port: self._answers(p), f"cluster node on port {port}")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        created = subprocess.run(
            [str(self.cli), "--cluster", "create", *nodes, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
        _wait_for(self._ready, "the Redis Cluster (cluster_state:ok on every node)")

    def close(self) -> None:
        for process in self._processes:
            _stop_process(process)
        self._processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _answers(self, port: int) -> bool:
        return self._command(port, "PING") == "PONG"

    def _ready(self) -> bool:
        for port in self.ports:
            if "cluster_state:ok" not in self._command(port, "CLUSTER", "INFO"):
                return False
            # Every node must know every slot's owner before clients may rely on redirects.
            slots = self._command(port, "CLUSTER", "SLOTS")
            if slots.count("127.0.0.1") < len(self.ports):
                return False
        return True

    def _command(self, port: int, *args: str) -> str:
        done = subprocess.run(
            [str(self.cli), "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return done.stdout.strip()
