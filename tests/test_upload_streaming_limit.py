"""Bodies past their limit are refused while they stream in (origin.body_limit), on a real
`banatie serve` process: a 413 in the envelope, and the server stops reading, so the client
never gets to send the rest."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import png_bytes
from tests.running import Banatie
from tests.test_multiprocess import project_key

MB = 1024 * 1024
TOTAL = 60 * MB  # what each client below would send if nobody stopped it
BOUNDARY = "banatie-test-boundary"


class Body:
    """A request body of TOTAL bytes made on demand, counting the bytes the client pulled."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        self.pulled = len(self.head)
        yield self.head
        while self.pulled < TOTAL:
            chunk = b"\0" * min(64 * 1024, TOTAL - self.pulled)
            self.pulled += len(chunk)
            yield chunk

    @property
    def exhausted(self) -> bool:
        return self.pulled >= TOTAL


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Banatie, str]]:
    env = {"MAX_UPLOAD_BYTES": str(1 * MB), "MAX_BODY_BYTES": str(64 * 1024)}
    app = Banatie("serve", tmp_path_factory.mktemp("limits"), env=env).start()
    try:
        yield app, project_key(app)
    finally:
        app.stop()


def assert_refused(response: httpx.Response, body: Body) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # What was pulled is the limit plus what socket buffers held, nowhere near the 60 MB.
    assert not body.exhausted and body.pulled < TOTAL // 3, body.pulled
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_an_upload_past_max_upload_bytes_is_refused_before_it_is_read(
    served: tuple[Banatie, str], declared: bool
) -> None:
    app, key = served
    body = Body(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
    )
    headers = {"X-API-Key": key, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if declared:
        headers["Content-Length"] = str(TOTAL)
    response = httpx.post(
        app.url + "/api/v1/images/upload", content=body, headers=headers, timeout=30
    )
    assert_refused(response, body)
    assert response.json()["error"]["message"] == f"The upload is larger than {MB} bytes."


def test_a_chunked_json_body_past_max_body_bytes_is_refused_before_it_is_read(
    served: tuple[Banatie, str],
) -> None:
    app, key = served
    body = Body(b'{"prompt": "')
    response = httpx.post(
        app.url + "/api/v1/generations",
        content=body,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        timeout=30,
    )
    assert_refused(response, body)


def test_an_upload_within_the_limit_still_works(served: tuple[Banatie, str]) -> None:
    app, key = served

    def chunks() -> Iterator[bytes]:  # chunked too: the count must not refuse a fair body
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        yield png_bytes()
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = httpx.post(
        app.url + "/api/v1/images/upload",
        content=chunks(),
        headers={"X-API-Key": key, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
