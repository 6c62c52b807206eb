"""The HTTP protocol the server runs: uvicorn's httptools one, with three changes.

- A request it cannot parse (a URL over 64 KB, a malformed request) gets our JSON error
  envelope instead of uvicorn's plain-text 400.
- A live URL whose response sits in the edge's L1 is answered right where its headers are
  parsed: the app's `fast_hit` gives status, headers and body, and they go out in one
  write (head and body joined: one copy of the body cost less than a vectored write in
  alternating runs). No ASGI scope, task, event or send coroutine is made for it; that
  machinery cost more than the rest of a hit (see docs/benchmarks.md). Everything else,
  and any hit `fast_hit` declines, takes uvicorn's ordinary path.
- Slow and silent clients cannot hold the process: a connection waiting for a request head
  longer than HEADER_TIMEOUT_S is closed (uvicorn arms no timer before the first request, and
  any byte cancels its keep-alive one), and beyond MAX_CONNECTIONS open connections the ones
  that have waited longest for a head are closed first, so a flood of idle sockets cannot
  spend the file descriptors every other client needs.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cache.errors import ValidationError, render_error
from cache.settings import Settings
from edge.disk_cache import FileBody
from edge.responses import CORS

Headers = list[tuple[bytes, bytes]]
# (method, request target, headers) → (status, header lines "name: value\r\n"..., body);
# the body is bytes, or a disk cache file's FileBody (fd, offset, size, close()) to sendfile.
FastHit = Callable[[bytes, bytes, Headers], "tuple[int, bytes, bytes | FileBody] | None"]

_STATUS_LINES = {int(s): b"HTTP/1.1 %d %s\r\n" % (int(s), s.phrase.encode()) for s in HTTPStatus}
# Descriptors kept for everything but client sockets: database, redis and S3 pools, files.
FD_RESERVE = 256
# From this size a fast-path body goes to the transport beside its head, not copied after it
# (about 2 µs less per 100 KB); below it one buffer is cheaper.
SEPARATE_BODY_BYTES = 16 * 1024


def _found(app: Any, name: str) -> Any:
    """Attribute `name` of the app behind any wrappers (uvicorn middleware, the lazy builder)."""
    for _ in range(8):
        found = getattr(app, name, None)
        if found is not None:
            return found
        inner = getattr(app, "app", None)
        if inner is None:
            return None
        app = inner
    return None


def fast_path_of(app: Any) -> FastHit | None:
    """The `fast_hit` of the app behind any wrappers (uvicorn middleware, the lazy builder)."""
    fast: FastHit | None = _found(app, "fast_hit")
    return fast


class ConnectionGuard:
    """One per server process: the request-head timeout and the cap on open connections.

    No timer per connection (the fast path would pay for one on every hit): connections
    waiting for a head sit in arrival order with the time they began waiting, and one timer,
    set for the longest waiter, closes those past HEADER_TIMEOUT_S."""

    def __init__(self, header_timeout_s: float, max_connections: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.open: set[EdgeHttpTools] = set()
        self.waiting: dict[EdgeHttpTools, float] = {}  # → loop time the wait began; oldest first
        self._sweep: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionGuard:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = soft - FD_RESERVE if soft > 2 * FD_RESERVE else soft // 2
        cap = settings.max_connections if settings.max_connections > 0 else room
        return cls(settings.header_timeout_s, max(1, min(cap, room)))

    def admit(self, conn: EdgeHttpTools) -> None:
        """Count a new connection (already waiting); over the cap, close the connections that
        have waited longest for a request head. Busy ones are never closed."""
        self.open.add(conn)
        while len(self.open) > self.max_connections and self.waiting:
            oldest = next(iter(self.waiting))  # `conn` itself when no other one is idle
            self.forget(oldest)
            oldest.transport.close()

    def wait(self, conn: EdgeHttpTools) -> None:
        """`conn` waits for a request head from now: it has HEADER_TIMEOUT_S to arrive,
        however it trickles in (data does not restart the clock)."""
        self.waiting.pop(conn, None)
        self.waiting[conn] = conn.loop.time()
        if self._sweep is None and self.header_timeout_s > 0:
            self._sweep = conn.loop.call_later(self.header_timeout_s, self._close_late, conn.loop)

    def busy(self, conn: EdgeHttpTools) -> None:
        self.waiting.pop(conn, None)

    def forget(self, conn: EdgeHttpTools) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)

    def _close_late(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        cutoff = loop.time() - self.header_timeout_s
        late = []
        for conn, since in self.waiting.items():
            if since > cutoff:
                break
            late.append(conn)
        for conn in late:
            self.forget(conn)
            conn.transport.close()
        if self.waiting:
            since = next(iter(self.waiting.values()))
            self._sweep = loop.call_later(max(since - cutoff, 0.01), self._close_late, loop)


def guard_of(server_state: Any, app: Any) -> ConnectionGuard:
    """The process's guard, made on its first connection from the app's settings."""
    guard = getattr(server_state, "banatie_guard", None)
    if guard is None:
        guard = ConnectionGuard.from_settings(_found(app, "settings") or Settings())
        server_state.banatie_guard = guard
    return guard


class EdgeHttpTools(HttpToolsProtocol):
    """httptools with the envelope for unreadable requests, the L1 fast path and the guard
    against slow and silent clients."""

    _fast_done = False  # the current request was answered by the fast path
    _fast: FastHit | None = None  # the app's, once found
    _defaults: tuple[object, bytes] = (None, b"")  # server_state.default_headers, as lines
    _guard: ConnectionGuard
    _socket_fd = -2  # -2: not looked up yet; -1: not a plain socket (TLS): no sendfile

    # uvicorn narrows the base's BaseTransport to Transport (and ignores the same error itself).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard = guard_of(self.server_state, self.app)
        self._guard.wait(self)
        self._guard.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.forget(self)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._guard.forget(self)  # another protocol owns the socket from here
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        self._fast_done = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._guard.busy(self)
        if self._answer_fast():
            if not self.transport.is_closing():
                self._guard.wait(self)
            return
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else the next request, already read, starts now
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._guard.wait(self)

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
        if isinstance(body, bytes):
            head = (_STATUS_LINES[status], self._defaults[1], lines, end)
            if len(body) < SEPARATE_BODY_BYTES:
                self.transport.write(b"".join((*head, body)))
            else:  # no copy of the body: the transport hands both to one writev
                self.transport.writelines((b"".join(head), body))
        else:
            self._send_file(b"".join((_STATUS_LINES[status], self._defaults[1], lines, end)), body)
        self._fast_done = True
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        elif self._guard.header_timeout_s <= 0 and not self.transport.is_closing():
            # Else no keep-alive timer per hit (cancelling and making one cost 8 % of a
            # 100 KB hit): the guard's one timer closes the connection if no request head
            # arrives within HEADER_TIMEOUT_S.
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        return True

    def _send_file(self, head: bytes, body: FileBody) -> None:
        """The head, then the body straight from its file with os.sendfile (the kernel copies
        page cache to socket; nothing passes through this process), when nothing waits in the
        transport's buffer, so the bytes stay in order; what cannot go now (a full socket
        buffer, TLS, anything else in the way) is read and handed to the transport."""
        try:
            sent = 0
            fd = self._plain_fd()
            if fd is not None and self.transport.get_write_buffer_size() == 0:
                written = _write_some(fd, head)
                if written == len(head):
                    sent = _sendfile_some(fd, body.fd, body.offset, body.size)
                else:
                    self.transport.write(head[written:])
            else:
                self.transport.write(head)
            if sent < body.size:
                self.transport.write(os.pread(body.fd, body.size - sent, body.offset + sent))
        except OSError:
            self.transport.close()  # the client went away mid-answer
        finally:
            body.close()

    def _plain_fd(self) -> int | None:
        """The connection's socket, when bytes written to it go to the client as they are."""
        fd = self._socket_fd
        if fd == -2:
            sock = self.transport.get_extra_info("socket")
            plain = sock is not None and self.transport.get_extra_info("sslcontext") is None
            fd = self._socket_fd = sock.fileno() if plain else -1
        return fd if fd >= 0 else None

    def send_400_response(self, msg: str) -> None:
        error = ValidationError(
            "The request could not be read: it is malformed or its URL is too long."
        )
        extra = [(b"x-content-type-options", b"nosniff"), (b"connection", b"close")]
        if getattr(self, "url", b"").startswith(b"/cdn/"):  # as far as it was read
            extra += CORS  # a public image route: any page may read why it failed
        status, headers, body = render_error(error, extra=extra)
        head = [_STATUS_LINES[status]]
        head += [k + b": " + v + b"\r\n" for k, v in self.server_state.default_headers]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()


def _write_some(fd: int, data: bytes) -> int:
    """What of `data` the non-blocking socket took now."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


def _sendfile_some(fd: int, file_fd: int, offset: int, size: int) -> int:
    """What of the file's bytes [offset, offset + size) the non-blocking socket took now."""
    sent = 0
    while sent < size:
        try:
            n = os.sendfile(fd, file_fd, offset + sent, size - sent)
        except BlockingIOError:
            break
        if n == 0:
            break
        sent += n
    return sent
