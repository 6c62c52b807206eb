"""A minimal keep-alive HTTP/1.1 GET client on an asyncio Protocol.

Cheaper per response than httpx (or asyncio streams): hundreds of connections in one process
stay light, and `done_at` is taken in the callback that delivers a response's last byte.
Bodies are counted, not kept, unless asked for.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    size: int  # body bytes received
    done_at: float  # time.perf_counter() when the last byte arrived
    body: bytes = b""  # only with keep_body=True

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.keep_body = False
        self._head = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._remaining = -1  # -1: still reading the head
        self._size = 0
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._remaining < 0:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self._head[end + 4 :])
            self._parse_head(bytes(self._head[:end]))
            self._head.clear()
            if self._remaining <= 0:  # complete (no body) or failed
                return
        take = data[: self._remaining]
        self._remaining -= len(take)
        self._size += len(take)
        if self.keep_body:
            self._body.append(take)
        if self._remaining == 0:
            self._complete()

    def _parse_head(self, head: bytes) -> None:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self._status = int(status_line.split(" ", 2)[1])
        self._headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            self._headers[name.strip().lower()] = value.strip()
        if "chunked" in self._headers.get("transfer-encoding", ""):
            self._fail(RuntimeError("chunked responses are not supported by this client"))
            return
        self._remaining = int(self._headers.get("content-length", "0"))
        self._size = 0
        self._body = []
        if self._remaining == 0:
            self._complete()

    def _complete(self) -> None:
        response = Response(
            self._status, self._headers, self._size, time.perf_counter(), b"".join(self._body)
        )
        self._remaining = -1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)

    def _fail(self, error: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("the server closed the connection"))


class Connection:
    def __init__(self, protocol: _Protocol, host: str) -> None:
        self._protocol = protocol
        self._host = host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        hostport = base_url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.partition(":")
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Protocol, host, int(port or 80))
        return cls(protocol, hostport)

    def send_get(
        self, target: str, headers: dict[str, str] | None = None, keep_body: bool = False
    ) -> None:
        """Write a GET without waiting; `read_response` then awaits its answer."""
        lines = [f"GET {target} HTTP/1.1", f"Host: {self._host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._protocol.keep_body = keep_body
        self._protocol.waiter = asyncio.get_running_loop().create_future()
        assert self._protocol.transport is not None
        self._protocol.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def read_response(self) -> Response:
        assert self._protocol.waiter is not None, "send_get first"
        return await self._protocol.waiter

    async def get(
        self, target: str, headers: dict[str, str] | None = None, keep_body: bool = False
    ) -> Response:
        self.send_get(target, headers, keep_body)
        return await self.read_response()

    async def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()


async def open_many(base_url: str, count: int, at_once: int = 64) -> list[Connection]:
    """`count` connections to one server, opened `at_once` at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one() -> Connection:
        async with gate:
            return await Connection.open(base_url)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def get_all(base_url: str, paths: list[str], connections: int) -> dict[str, int]:
    """GET each of `paths` once, over `connections` keep-alive connections; a count per status."""
    pool = await open_many(base_url, connections)
    queue = list(reversed(paths))
    statuses: dict[str, int] = {}

    async def worker(connection: Connection) -> None:
        while queue:
            response = await connection.get(queue.pop())
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1

    try:
        await asyncio.gather(*(worker(c) for c in pool))
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    return statuses


def run(main):  # type: ignore[no-untyped-def]
    """asyncio.run on uvloop when it is installed (a lighter client loop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
