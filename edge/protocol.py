"""The HTTP protocol the server runs: uvicorn's httptools one, with two changes.

- A request it cannot parse (a URL over 64 KB, a malformed request) gets our JSON error
  envelope instead of uvicorn's plain-text 400.
- A live URL whose response sits in the edge's L1 is answered right where its headers are
  parsed: the app's `fast_hit` gives status, headers and body, and they go out in one
  write (head and body joined: one copy of the body cost less than a vectored write in
  alternating runs). No ASGI scope, task, event or send coroutine is made for it; that
  machinery cost more than the rest of a hit (see docs/benchmarks.md). Everything else,
  and any hit `fast_hit` declines, takes uvicorn's ordinary path.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cache.errors import ValidationError

Headers = list[tuple[bytes, bytes]]
# (method, request target, headers) → (status, header lines "name: value\r\n"..., body)
FastHit = Callable[[bytes, bytes, Headers], "tuple[int, bytes, bytes] | None"]

_STATUS_LINES = {int(s): b"HTTP/1.1 %d %s\r\n" % (int(s), s.phrase.encode()) for s in HTTPStatus}


def fast_path_of(app: Any) -> FastHit | None:
    """The `fast_hit` of the app behind any wrappers (uvicorn middleware, the lazy builder)."""
    for _ in range(8):
        found = getattr(app, "fast_hit", None)
        if found is not None:
            return found
        inner = getattr(app, "app", None)
        if inner is None:
            return None
        app = inner
    return None


class EdgeHttpTools(HttpToolsProtocol):
    """httptools with the envelope for unreadable requests and the L1 fast path."""

    _fast_done = False  # the current request was answered by the fast path
    _fast: FastHit | None = None  # the app's, once found
    _defaults: tuple[object, bytes] = (None, b"")  # server_state.default_headers, as lines

    def on_message_begin(self) -> None:
        self._fast_done = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._answer_fast():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._fast_done:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._fast_done:
            super().on_message_complete()

    def _answer_fast(self) -> bool:
        # Only when nothing else is in progress on this connection (pipelining keeps order).
        if self.pipeline or not (self.cycle is None or self.cycle.response_complete):
            return False
        if self.parser.should_upgrade() or self.flow.write_paused:
            # A client that does not read its responses gets uvicorn's back-pressure.
            return False
        fast = self._fast
        if fast is None:
            fast = self._fast = fast_path_of(self.app)  # None until the app has started
            if fast is None:
                return False
        answer = fast(self.parser.get_method(), self.url, self.headers)
        if answer is None:
            return False
        status, lines, body = answer
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() == "1.1"
        defaults = self.server_state.default_headers  # a new list each second (the date)
        if self._defaults[0] is not defaults:
            self._defaults = (defaults, b"".join(k + b": " + v + b"\r\n" for k, v in defaults))
        end = b"\r\n" if keep_alive else b"connection: close\r\n\r\n"
        self.transport.write(b"".join((_STATUS_LINES[status], self._defaults[1], lines, end, body)))
        self._fast_done = True
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        elif not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        return True

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
