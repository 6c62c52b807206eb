"""One hit decision for both paths: the server protocol's fast path (`Edge.fast_hit`) and the
ASGI path answer the same request with the same bytes — status line, headers (but Date and
X-Request-Id) and body — from the L1 and from the disk tier, on a real `banatie serve`.

A fragment in the request target (`#x`) makes the fast path decline the request, so the same
request reaches the ASGI path; `banatie_fast_path_responses_total` says which path answered.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.running import Banatie
from tests.test_disk_tier import entry_files, metric
from tests.test_multiprocess import project_key
from tests.waiting import wait_until

LIVE = "/cdn/acme/web/live/site?prompt=" + quote("a lighthouse at dusk")
VARIANT = LIVE + "&w=48&format=png"
FAST = "banatie_fast_path_responses_total"
Answer = tuple[bytes, list[bytes], bytes]


def request(app: Banatie, method: str, target: str, headers: dict[str, str]) -> Answer:
    """`method target` as is, on a new connection: (status line, header lines, body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: x", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    kept = [h for h in header_lines if not h.lower().startswith((b"date:", b"x-request-id:"))]
    return status, kept, body


def both_paths(
    app: Banatie, method: str, target: str, headers: dict[str, str]
) -> tuple[Answer, Answer, float]:
    """The answer to `target` as is, then with a fragment (the ASGI path), and how many of
    the two the fast path gave."""
    before = metric(app, FAST)
    fast = request(app, method, target, headers)
    asgi = request(app, method, target + "#x", headers)
    return fast, asgi, metric(app, FAST) - before


def wait_for_entries(directory: Path, count: int) -> None:
    wait_until(
        lambda: len(entry_files(directory)) >= count, f"{count} disk cache entries in {directory}"
    )


@pytest.fixture(scope="module", params=["l1", "disk"])
def warm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A server whose cache holds LIVE and VARIANT, in its L1 or (L1_BYTES=100) on disk only;
    with the project and the API key known, so the fast path may answer."""
    tier = request.param
    directory = tmp_path_factory.mktemp(tier)
    env = {"DISK_CACHE_BYTES": str(1 << 26)}
    if tier == "disk":
        env["L1_BYTES"] = "100"  # no image fits: every hit comes from the disk tier
    app = Banatie("serve", directory, env)
    app.start()
    try:
        key = project_key(app)
        for target in (LIVE, VARIANT):
            assert httpx.get(app.url + target, timeout=60).headers["x-cache-status"] == "MISS"
        api = "/api/v1/live?prompt=" + quote("a lighthouse at dusk")
        assert httpx.get(app.url + api, headers={"X-API-Key": key}, timeout=60).status_code == 200
        if tier == "disk":
            wait_for_entries(directory / "disk-cache", 3)
        for target in (LIVE, VARIANT):  # the project is known from here on
            assert httpx.get(app.url + target).headers["x-cache-status"] == "HIT"
        yield tier, app, key
    finally:
        app.stop()


def assert_same_hit(fast: Answer, asgi: Answer, status: bytes) -> None:
    assert fast[0] == b"HTTP/1.1 " + status
    assert b"x-cache-status: HIT" in fast[1]
    assert fast == asgi


def test_a_live_hit_is_the_same_on_both_paths(warm: tuple[str, Banatie, str]) -> None:
    _, app, _ = warm
    fast, asgi, by_fast = both_paths(app, "GET", LIVE, {})
    assert by_fast == 1
    assert_same_hit(fast, asgi, b"200 OK")
    assert fast[2] == httpx.get(app.url + LIVE).content


def test_a_variant_hit_is_the_same_on_both_paths(warm: tuple[str, Banatie, str]) -> None:
    _, app, _ = warm
    fast, asgi, by_fast = both_paths(app, "GET", VARIANT, {})
    assert by_fast == 1
    assert_same_hit(fast, asgi, b"200 OK")
    assert fast[2].startswith(b"\x89PNG")


def test_an_api_key_hit_is_the_same_on_both_paths(warm: tuple[str, Banatie, str]) -> None:
    _, app, key = warm
    api = "/api/v1/live?prompt=" + quote("a lighthouse at dusk")
    fast, asgi, by_fast = both_paths(app, "GET", api, {"X-API-Key": key})
    assert by_fast == 1
    assert_same_hit(fast, asgi, b"200 OK")


def test_a_not_modified_is_the_same_on_both_paths(warm: tuple[str, Banatie, str]) -> None:
    _, app, _ = warm
    for target in (LIVE, VARIANT):
        etag = httpx.get(app.url + target).headers["etag"]
        fast, asgi, by_fast = both_paths(app, "GET", target, {"If-None-Match": etag})
        assert by_fast == 1
        assert_same_hit(fast, asgi, b"304 Not Modified")
        assert fast[2] == b""


def test_a_head_is_the_same_on_both_paths(warm: tuple[str, Banatie, str]) -> None:
    _, app, _ = warm
    fast, asgi, by_fast = both_paths(app, "HEAD", LIVE, {})
    assert by_fast == 1
    assert_same_hit(fast, asgi, b"200 OK")
    assert fast[2] == b""
    assert f"content-length: {len(httpx.get(app.url + LIVE).content)}".encode() in fast[1]


def test_a_range_is_left_to_the_asgi_path_and_answered_alike(
    warm: tuple[str, Banatie, str],
) -> None:
    _, app, _ = warm
    body = httpx.get(app.url + LIVE).content
    fast, asgi, by_fast = both_paths(app, "GET", LIVE, {"Range": "bytes=10-99"})
    assert by_fast == 0  # the fast path declines every Range
    assert_same_hit(fast, asgi, b"206 Partial Content")
    assert fast[2] == body[10:100]
    assert f"content-range: bytes 10-99/{len(body)}".encode() in fast[1]


def test_a_disk_hit_is_sent_from_its_file_with_the_same_bytes(
    warm: tuple[str, Banatie, str],
) -> None:
    tier, app, _ = warm
    sends = "banatie_disk_cache_file_sends_total"
    before = metric(app, sends)
    fast, asgi, by_fast = both_paths(app, "GET", LIVE, {})
    assert by_fast == 1
    assert_same_hit(fast, asgi, b"200 OK")
    # On the disk tier, a file this process has read whole is sent with os.sendfile.
    assert metric(app, sends) - before == (1 if tier == "disk" else 0)
