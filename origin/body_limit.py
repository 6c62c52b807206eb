"""Request bodies counted while they stream in, so a body past its limit is never read whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cache.errors import PayloadTooLarge
from cache.settings import Settings

UPLOAD_PATH = "/api/v1/images/upload"
# Room for the multipart boundaries, part headers and the small fields beside the file.
MULTIPART_OVERHEAD = 64 * 1024


class BodyLimit:
    """ASGI layer: an upload past MAX_UPLOAD_BYTES (plus the multipart overhead) or any other
    body past MAX_BODY_BYTES raises 413 from `receive` the moment the count passes the limit,
    chunked or not; nothing beyond it is buffered or spooled to disk. A 413 sent before the
    body was read to its end closes the connection: the server reads no more of it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_upload_bytes = settings.max_upload_bytes
        self.max_body_bytes = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == UPLOAD_PATH:
            limit = self.max_upload_bytes + MULTIPART_OVERHEAD
            refusal = f"The upload is larger than {self.max_upload_bytes} bytes."
        else:
            limit = self.max_body_bytes
            refusal = f"The request body is larger than {self.max_body_bytes} bytes."
        received = 0
        complete = False

        async def counted_receive() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise PayloadTooLarge(refusal)
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                if not complete:
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, counted_receive, closing_send)
