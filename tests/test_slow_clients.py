"""Slow and silent clients (edge.protocol) against real `banatie` processes.

A connection that does not finish a request head within HEADER_TIMEOUT_S is closed, however
it trickles its bytes; past MAX_CONNECTIONS the connections that have waited longest for a
head are closed first. Cached hits and /health keep being answered during such an attack.
"""

from __future__ import annotations

import resource
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.running import Banatie
from tests.servers import free_port
from tests.test_multiprocess import project_key
from tests.test_server_protocol import fast_answers
from tests.waiting import wait_until

LIVE = "/cdn/acme/web/live/site?prompt=" + quote("a heron in the reeds")
DEADLINE_S = 20.0  # the wait for closes; with HEADER_TIMEOUT_S=1 they come within seconds


def connect(app: Banatie) -> socket.socket:
    return socket.create_connection(("127.0.0.1", app.port), timeout=10)


def is_closed(sock: socket.socket) -> bool:
    """The server closed `sock` (EOF or reset); False while it is open and silent."""
    sock.settimeout(0)  # a look, not a wait
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Client sockets closed after the test, whatever happened."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_past_max_connections_the_longest_waiting_are_closed_and_hits_still_flow(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    env = {"MAX_CONNECTIONS": "32", "HEADER_TIMEOUT_S": "300"}  # only the cap acts here
    app = Banatie("serve", tmp_path, env=env).start()
    try:
        project_key(app)
        assert httpx.get(app.url + LIVE).headers["x-cache-status"] == "MISS"
        sockets += [connect(app) for _ in range(100)]  # silent: not a byte sent
        hit = httpx.get(app.url + LIVE, timeout=10)
        assert hit.status_code == 200 and hit.headers["x-cache-status"] == "HIT"
        assert httpx.get(app.url + "/health", timeout=10).status_code == 200
        # The oldest idle sockets made room; the newest are still open.
        wait_until(
            lambda: all(is_closed(s) for s in sockets[:60]), "the oldest 60 closed", DEADLINE_S
        )
        assert not any(is_closed(s) for s in sockets[-20:])
    finally:
        app.stop()


@pytest.mark.parametrize("layout", ["serve", "origin", "edge"])
def test_connections_that_never_finish_a_request_head_are_closed(
    tmp_path: Path, sockets: list[socket.socket], layout: str
) -> None:
    env = {"HEADER_TIMEOUT_S": "1", "ORIGIN_URL": f"http://127.0.0.1:{free_port()}"}
    app = Banatie(layout, tmp_path, env=env).start()
    try:
        silent = [connect(app) for _ in range(40)]
        slowloris = [connect(app) for _ in range(40)]
        # One request answered, then the next head trickles in (uvicorn's keep-alive timer
        # is cancelled by the first byte).
        after_one = connect(app)
        after_one.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b'"ok"' not in answer:
            chunk = after_one.recv(1 << 16)
            assert chunk, answer
            answer += chunk
        sockets += [*silent, *slowloris, after_one]
        trickling = [*slowloris, after_one]
        head = iter(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 10_000)

        def trickle() -> None:  # one more byte of the head on every open slow socket
            byte = bytes([next(head)])
            for sock in trickling:
                try:
                    sock.send(byte)
                except OSError:
                    pass  # closed by the server

        trickle()
        assert httpx.get(app.url + "/health", timeout=10).status_code == 200

        def closed_while_trickling() -> bool:
            trickle()
            return all(is_closed(s) for s in sockets)

        # The poll is the slow clients' pace, a byte every 0.1 s: that pace is the behaviour.
        wait_until(closed_while_trickling, "every stalled socket closed", DEADLINE_S, poll_s=0.1)
        assert httpx.get(app.url + "/health", timeout=10).status_code == 200
    finally:
        app.stop()


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard != resource.RLIM_INFINITY and hard > 512, (
        f"this test needs a finite hard RLIMIT_NOFILE above 512 (it is {hard}): raise it "
        "(ulimit -Hn) before running the suite"
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # inherited by the server
    try:
        app = Banatie("serve", tmp_path)
        app.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert app.process is not None
        limits = Path(f"/proc/{app.process.pid}/limits").read_text()
        [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        app.stop()


def test_an_idle_connection_after_a_fast_path_hit_is_closed(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """The fast path arms no keep-alive timer per hit: the guard closes the idle connection."""
    app = Banatie("serve", tmp_path, env={"HEADER_TIMEOUT_S": "1"}).start()
    try:
        project_key(app)
        assert httpx.get(app.url + LIVE).headers["x-cache-status"] == "MISS"
        before = fast_answers(app)
        sock = connect(app)
        sockets.append(sock)
        sock.sendall(f"GET {LIVE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1 << 16)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200") and b"x-cache-status: hit" in head.lower()
        assert fast_answers(app) == before + 1
        wait_until(lambda: is_closed(sock), "the idle connection closed", DEADLINE_S)
    finally:
        app.stop()
