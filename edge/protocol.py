"""The HTTP protocol the server runs: uvicorn's httptools one, answering requests it cannot
parse with our JSON error envelope instead of uvicorn's plain-text 400."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cache.errors import ValidationError


class EnvelopeHttpTools(HttpToolsProtocol):
    """httptools, except for its 400: a URL over 64 KB (httptools cannot parse one) or a
    malformed request still gets the envelope every other error gets, never cached."""

    def send_400_response(self, msg: str) -> None:
        error = ValidationError(
            "The request could not be read: it is malformed or its URL is too long."
        )
        body = error.body()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"cache-control: no-store\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
