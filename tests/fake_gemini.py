"""A stand-in for Gemini's generateContent endpoint, served by a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.waiting import wait_until

# Pixel sizes as in origin.generators.ASPECT_RATIOS, scaled down by 8 to keep answers small.
_SIZES = {
    "1:1": (128, 128),
    "16:9": (168, 96),
    "9:16": (96, 168),
    "4:3": (148, 108),
    "3:4": (108, 148),
    "3:2": (156, 104),
    "2:3": (104, 156),
    "4:5": (112, 144),
    "5:4": (144, 112),
    "21:9": (192, 84),
}
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}


@dataclass(frozen=True)
class InlineImage:
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class RecordedRequest:
    """One generateContent call as the fake understood it."""

    version: str
    model: str
    texts: list[str]
    images: list[InlineImage]
    generation_config: dict[str, Any]
    aspect_ratio: str | None
    system_instruction: str | None
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        return "\n".join(self.texts)


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeGemini:
    """ASGI app answering `POST /{v1|v1beta}/models/{model}:generateContent`.

    `url` is where it listens once a FakeGeminiServer runs it.
    Controls (safe to call from the test thread): `fail_next`, `malformed_next`, `delay_s`,
    `hold`/`let_go` (image calls hang until let go), `reset`; what it saw: `requests`, `image_requests`, `text_requests`, `generations`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.generations = 0  # image answers actually given
        self.delay_s = 0.0
        self._holding = False
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []  # until let go
        self.url = ""  # set by FakeGeminiServer.start
        self._failures: list[_Failure] = []
        self._malformed: list[str] = []
        self.app = Starlette(
            routes=[Route("/{version}/models/{model_action:path}", self._handle, methods=["POST"])]
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- controls ------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `n` calls with `status` (and a Google-style error body by default)."""
        if body is None:
            body = {
                "error": {
                    "code": status,
                    "message": f"fake failure {status}",
                    "status": _STATUS_NAMES.get(status, "UNKNOWN"),
                }
            }
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        with self._lock:
            self._failures += [_Failure(status, body, headers) for _ in range(n)]

    def malformed_next(self, n: int = 1, kind: str = "no_parts") -> None:
        """Answer the next `n` calls with 200 but a broken body.

        kinds: `invalid_json`, `no_parts` (a candidate without content parts),
        `no_candidates`, `text_only` (a refusal in text, no image).
        """
        if kind not in {"invalid_json", "no_parts", "no_candidates", "text_only"}:
            raise ValueError(f"unknown malformed kind {kind!r}")
        with self._lock:
            self._malformed += [kind] * n

    def hold(self) -> None:
        """Image calls hang (after being recorded in `requests`) until `let_go`."""
        with self._lock:
            self._holding = True

    def let_go(self) -> None:
        with self._lock:
            self._holding = False
            held, self._held = self._held, []
        for loop, released in held:
            if not loop.is_closed():  # else the server stopped, and the call with it
                loop.call_soon_threadsafe(released.set)

    def reset(self) -> None:
        self.let_go()
        with self._lock:
            self.requests.clear()
            self.generations = 0
            self.delay_s = 0.0
            self._failures.clear()
            self._malformed.clear()

    @property
    def image_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if "image" in r.model]

    @property
    def text_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if "image" not in r.model]

    async def _until_let_go(self) -> None:
        released = asyncio.Event()
        with self._lock:  # `let_go` (on the test's thread) sets every event it finds here
            if not self._holding:
                return
            self._held.append((asyncio.get_running_loop(), released))
        await released.wait()

    # -- the endpoint --------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        version = request.path_params["version"]
        model, _, action = request.path_params["model_action"].partition(":")
        if version not in {"v1", "v1beta"} or action != "generateContent":
            return _error(404, f"no route for {version}/models/{model}:{action}")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not JSON")
        recorded = _record(version, model, body)
        with self._lock:
            self.requests.append(recorded)
            failure = self._failures.pop(0) if self._failures else None
            malformed = self._malformed.pop(0) if self._malformed and not failure else None
            delay = self.delay_s
        if delay:
            await asyncio.sleep(delay)  # a slow upstream: the wait is the behaviour asked for
        if "image" in model:
            await self._until_let_go()
        if failure is not None:
            return JSONResponse(failure.body, failure.status, headers=failure.headers)
        if malformed is not None:
            return _malformed_answer(malformed, model)
        if "image" in model:
            png = await asyncio.to_thread(_png_for, recorded.prompt, recorded.aspect_ratio)
            with self._lock:
                self.generations += 1
            part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}
        else:
            part = {"text": f"Enhanced: {recorded.prompt}"}
        return JSONResponse(_answer([part], model))


class FakeGeminiServer:
    """Runs a `FakeGemini` in uvicorn on a free loopback port, in a background thread."""

    def __init__(self, fake: FakeGemini | None = None) -> None:
        self.fake = fake or FakeGemini()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeGeminiServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        self.fake.url = self.url
        config = uvicorn.Config(
            self.fake,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        server, thread = self._server, self._thread
        wait_until(lambda: server.started or not thread.is_alive(), "fake Gemini to start")
        if not server.started:
            raise RuntimeError("fake Gemini server did not start")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
        self._server = self._thread = None


def _record(version: str, model: str, body: dict[str, Any]) -> RecordedRequest:
    texts: list[str] = []
    images: list[InlineImage] = []
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    for content in contents:
        for part in content.get("parts") or []:
            if "text" in part:
                texts.append(part["text"])
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                mime = inline.get("mimeType") or inline.get("mime_type") or ""
                images.append(InlineImage(mime, _b64decode(inline.get("data", ""))))
    config = body.get("generationConfig") or body.get("generation_config") or {}
    image_config = config.get("imageConfig") or config.get("image_config") or {}
    aspect = image_config.get("aspectRatio") or image_config.get("aspect_ratio")
    system = body.get("systemInstruction") or body.get("system_instruction")
    system_text = None
    if system:
        system_text = "\n".join(p.get("text", "") for p in system.get("parts") or [])
    return RecordedRequest(version, model, texts, images, config, aspect, system_text, body)


def _b64decode(data: str) -> bytes:
    """Standard or URL-safe base64, padded or not (the SDK sends URL-safe)."""
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4))


def _png_for(prompt: str, aspect_ratio: str | None) -> bytes:
    """A small real PNG whose colour depends on the prompt."""
    digest = hashlib.sha256(prompt.encode()).digest()
    size = _SIZES.get(aspect_ratio or "1:1", _SIZES["1:1"])
    out = io.BytesIO()
    Image.new("RGB", size, (digest[0], digest[1], digest[2])).save(out, format="PNG")
    return out.getvalue()


def _answer(parts: list[dict[str, Any]], model: str) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "modelVersion": model,
        "usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 1},
    }


def _malformed_answer(kind: str, model: str) -> Response:
    if kind == "invalid_json":
        return Response("{not json", media_type="application/json")
    if kind == "no_candidates":
        return JSONResponse({"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": model})
    if kind == "text_only":
        return JSONResponse(_answer([{"text": "I can't draw that."}], model))
    return JSONResponse(
        {"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_SAFETY"}]}
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "")}},
        status,
    )
