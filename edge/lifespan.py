"""Start and stop: the ASGI lifespan of the edge (with the origin mounted behind it or not),
and the liveness answer of an edge running alone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from cache.asgi import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("banatie.edge")


async def lifespan(
    scope: Scope,
    receive: Receive,
    send: Send,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
    fallback: ASGIApp | None,
) -> None:
    """Run `startup` and `shutdown` in the lifespan protocol. The fallback (origin) starts
    first and stops last: the edge depends on it."""
    if fallback is None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await startup()
                except Exception as e:
                    log.exception("edge startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def edge_receive() -> Message:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await shutdown()
        return message

    async def edge_send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            try:
                await startup()
            except Exception as e:
                log.exception("edge startup failed")
                message = {"type": "lifespan.startup.failed", "message": str(e)}
        await send(message)

    await fallback(scope, edge_receive, edge_send)


async def send_health(send: Send) -> None:
    """Liveness of an edge running alone (with the origin mounted, the origin answers)."""
    body = b'{"success":true,"data":{"status":"ok","role":"edge"}}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
