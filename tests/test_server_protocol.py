"""The server as uvicorn runs it (edge.protocol, banatie.cli), on real `banatie serve` processes.

The L1 fast path: a hit answered there must be the same response the ASGI path gives, and
every request it is not sure about must still reach the ASGI path.
`banatie_fast_path_responses` in /metrics says which path answered. And X-Forwarded-For is
the edge's business alone (TRUSTED_PROXIES), not uvicorn's.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.running import Banatie
from tests.test_multiprocess import project_key

PROMPT = "a red kite over a green hill"
LIVE = "/cdn/acme/web/live/site?prompt=" + quote(PROMPT)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Banatie, str]]:
    app = Banatie("serve", tmp_path_factory.mktemp("fast"))
    app.start()
    try:
        yield app, project_key(app)
    finally:
        app.stop()


def fast_answers(app: Banatie) -> int:
    text = httpx.get(app.url + "/metrics").text
    return int(float(re.search(r"^banatie_fast_path_responses_total (\S+)$", text, re.M)[1]))


def raw(app: Banatie, payload: bytes, responses: int = 1) -> bytes:
    """Send `payload` as is on a new connection; read until `responses` complete or EOF."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return data
            data += chunk
            if len(split_responses(data)) >= responses:
                return data


def split_responses(data: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Complete responses in `data` (each with a Content-Length): (status line, headers, body)."""
    out = []
    while b"\r\n\r\n" in data:
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        size = 0 if b" 304 " in lines[0] else int(headers.get(b"content-length", b"0"))
        if b"HEAD-REQUEST" in lines[0]:
            size = 0
        if len(rest) < size:
            break
        out.append((lines[0], headers, rest[:size]))
        data = rest[size:]
    return out


def test_a_hit_is_answered_by_the_fast_path_with_the_asgi_paths_response(
    served: tuple[Banatie, str],
) -> None:
    app, _ = served
    miss = httpx.get(app.url + LIVE)
    assert miss.status_code == 200 and miss.headers["x-cache-status"] == "MISS"
    before = fast_answers(app)
    hit = httpx.get(app.url + LIVE)
    assert fast_answers(app) == before + 1
    assert hit.status_code == 200 and hit.headers["x-cache-status"] == "HIT"
    assert hit.content == miss.content
    for name in ("etag", "content-type", "cache-control", "x-image-id", "x-scope", "server"):
        assert hit.headers[name] == miss.headers[name], name
    assert hit.headers["content-length"] == str(len(miss.content))
    assert hit.headers["x-content-type-options"] == "nosniff" and hit.headers["date"]


def test_conditional_and_head_requests_on_the_fast_path(served: tuple[Banatie, str]) -> None:
    app, _ = served
    first = httpx.get(app.url + LIVE)
    before = fast_answers(app)
    not_modified = httpx.get(app.url + LIVE, headers={"If-None-Match": first.headers["etag"]})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == first.headers["etag"]
    head = httpx.head(app.url + LIVE)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    assert fast_answers(app) == before + 2


def test_what_the_fast_path_declines_still_gets_its_answer(served: tuple[Banatie, str]) -> None:
    app, key = served
    httpx.get(app.url + LIVE)
    before = fast_answers(app)
    ranged = httpx.get(app.url + LIVE, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and len(ranged.content) == 10
    bad = httpx.get(app.url + "/cdn/acme/web/live/site?prompt=x&aspectRatio=7:3")
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "aspectRatio"
    unknown = httpx.get(app.url + LIVE.replace("/acme/", "/nobody/"))
    assert unknown.status_code == 404
    post = httpx.post(app.url + LIVE)
    assert post.status_code == 405
    # A fragment is not part of the query: the ASGI path (uvicorn's URL parser) answers.
    [(status, _, body)] = split_responses(
        raw(app, f"GET {LIVE}#x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    )
    assert status.startswith(b"HTTP/1.1 200") and body == httpx.get(app.url + LIVE).content
    before += 1  # the plain GET just above was a fast hit
    wrong_key = httpx.get(
        app.url + "/api/v1/live?prompt=" + quote(PROMPT), headers={"X-API-Key": "bnt_" + "0" * 64}
    )
    assert wrong_key.status_code == 401
    assert fast_answers(app) == before  # none of them was answered there
    # The key-authenticated form: the first request meets the key, the second is fast.
    api = app.url + "/api/v1/live?prompt=" + quote(PROMPT)
    assert httpx.get(api, headers={"X-API-Key": key}).status_code == 200
    again = httpx.get(api, headers={"X-API-Key": key})
    assert again.status_code == 200 and again.headers["x-cache-status"] == "HIT"
    assert fast_answers(app) == before + 1


def test_pipelined_requests_are_answered_in_order(served: tuple[Banatie, str]) -> None:
    app, _ = served
    body = httpx.get(app.url + LIVE).content
    request = f"GET {LIVE} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    other = b"GET /cdn/acme/web/live/site?prompt=x&aspectRatio=7:3 HTTP/1.1\r\nHost: x\r\n\r\n"
    data = raw(app, request + other + request, responses=3)
    answers = split_responses(data)
    assert [a[0].split(b" ")[1] for a in answers] == [b"200", b"400", b"200"]
    assert answers[0][2] == body and answers[2][2] == body


def test_connection_close_and_http_1_0_close_after_the_answer(
    served: tuple[Banatie, str],
) -> None:
    app, _ = served
    body = httpx.get(app.url + LIVE).content
    for request in (
        f"GET {LIVE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        f"GET {LIVE} HTTP/1.0\r\n\r\n".encode(),
    ):
        data = raw(app, request, responses=2)  # reads to EOF: the server must close
        [(status, headers, got)] = split_responses(data)
        assert status.startswith(b"HTTP/1.1 200") and got == body
        assert headers[b"connection"] == b"close"


def test_a_signed_project_is_never_answered_unsigned(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path).start()
    try:
        key = project_key(app)
        assert httpx.get(app.url + LIVE).status_code == 200  # cached while unsigned
        assert httpx.get(app.url + LIVE).status_code == 200
        assert fast_answers(app) == 1
        secret = httpx.post(app.url + "/api/v1/live/signing/rotate", headers={"X-API-Key": key})
        assert secret.status_code in (200, 201), secret.text
        turned_on = httpx.put(
            app.url + "/api/v1/live/signing",
            headers={"X-API-Key": key},
            json={"requireSignedUrls": True},
        )
        assert turned_on.status_code == 200, turned_on.text
        refused = httpx.get(app.url + LIVE)
        assert refused.status_code == 403
        assert fast_answers(app) == 1
    finally:
        app.stop()


def test_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_ip_budget(
    tmp_path: Path,
) -> None:
    """uvicorn would trust X-Forwarded-For from loopback by default; the edge must not."""
    app = Banatie(
        "serve", tmp_path, env={"IP_BUDGET_PER_HOUR": "1", "IP_BUDGET_BURST": "1"}
    ).start()
    try:
        project_key(app)
        first = httpx.get(
            app.url + "/cdn/acme/web/live/site?prompt=one",
            headers={"X-Forwarded-For": "203.0.113.1"},
        )
        assert first.status_code == 200
        second = httpx.get(
            app.url + "/cdn/acme/web/live/site?prompt=two",
            headers={"X-Forwarded-For": "203.0.113.2"},
        )
        assert second.status_code == 429, second.text
    finally:
        app.stop()


def unreadable(app: Banatie, target: str) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """A request whose head the parser refuses (a header line without a colon)."""
    payload = f"GET {target} HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n".encode()
    [(status, headers, body)] = split_responses(raw(app, payload))
    return status, headers, body


def test_an_unreadable_request_gets_the_error_envelope(served: tuple[Banatie, str]) -> None:
    app, _ = served
    status, headers, body = unreadable(app, "/api/v1/live?prompt=x")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert json.loads(body)["error"]["code"] == "VALIDATION_ERROR"
    assert b"access-control-allow-origin" not in headers  # /api/v1/live stays same-origin


def test_an_unreadable_request_on_a_public_route_allows_any_origin(
    served: tuple[Banatie, str],
) -> None:
    app, _ = served
    status, headers, body = unreadable(app, LIVE)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"access-control-allow-origin"] == b"*"
    assert json.loads(body)["error"]["code"] == "VALIDATION_ERROR"
