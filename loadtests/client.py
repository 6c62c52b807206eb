"""A minimal keep-alive HTTP/1.1 GET client on asyncio streams.

Lighter than httpx per request, so hundreds of connections in one process stay cheap and the
time a response is complete is measured close to when its last byte arrived.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    done_at: float  # time.perf_counter() when the last byte was read

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


class Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        hostport = base_url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.partition(":")
        reader, writer = await asyncio.open_connection(host, int(port or 80), limit=1 << 20)
        return cls(reader, writer, hostport)

    def send_get(self, target: str, headers: dict[str, str] | None = None) -> None:
        """Write a GET without waiting; read its answer with `read_response`."""
        lines = [f"GET {target} HTTP/1.1", f"Host: {self._host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def read_response(self) -> Response:
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise RuntimeError("chunked responses are not supported by this client")
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        return Response(status, headers, body, time.perf_counter())

    async def get(self, target: str, headers: dict[str, str] | None = None) -> Response:
        self.send_get(target, headers)
        return await self.read_response()

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


async def open_many(base_url: str, count: int, at_once: int = 64) -> list[Connection]:
    """`count` connections to one server, opened `at_once` at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one() -> Connection:
        async with gate:
            return await Connection.open(base_url)

    return list(await asyncio.gather(*(one() for _ in range(count))))
