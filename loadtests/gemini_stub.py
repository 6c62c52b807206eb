"""A stand-in for Gemini's generateContent endpoint, for benchmarks (its own process).

The prompt steers the answer, so one stub serves every scenario without controls:

    bytes=N    a PNG of exactly N bytes (a small picture padded with a private chunk,
               cheap to decode: for serving benchmarks where only the size matters)
    noise=N    a real noise PNG of about N bytes (as costly to decode as a photo of that size)
    delay=S    answer after S seconds (a slow model)

Without `bytes=` or `noise=` the answer is a small PNG whose colour depends on the prompt.
`GET /stats` answers {"generations", "by_prompt": {prompt: n},
"handler_ms": [[prompt, ms, received_at]]}: the stub's own time for each image answer (request
read → answer handed to the socket) and when it arrived (Unix time); `POST /reset` clears it.

    python -m loadtests.gemini_stub --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import random
import re
import struct
import time
import zlib
from collections import Counter
from typing import Any

_BYTES = re.compile(r"\bbytes=(\d+)")
_NOISE = re.compile(r"\bnoise=(\d+)")
_DELAY = re.compile(r"\bdelay=([0-9.]+)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def small_png(seed: bytes, side: int = 8) -> bytes:
    """A sidexside RGB PNG of one colour taken from `seed`."""
    r, g, b = hashlib.sha256(seed).digest()[:3]
    row = b"\x00" + bytes((r, g, b)) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(row * side))
        + _chunk(b"IEND", b"")
    )


def padded_png(seed: bytes, size: int) -> bytes:
    """A valid PNG of exactly `size` bytes: a small picture plus an ancillary `bnPd` chunk."""
    base = small_png(seed)
    pad = size - len(base) - 12  # a chunk costs 12 bytes around its data
    if pad < 0:
        return base
    filler = hashlib.sha256(seed).digest()
    data = (filler * (pad // len(filler) + 1))[:pad]
    end = _chunk(b"IEND", b"")
    return base[: -len(end)] + _chunk(b"bnPd", data) + end


_noise_cache: dict[int, bytes] = {}


def noise_png(size: int) -> bytes:
    """An RGB noise PNG of about `size` bytes (noise does not compress: ~3 bytes a pixel)."""
    if size not in _noise_cache:
        from PIL import Image

        side = max(1, int((size / 3) ** 0.5))
        pixels = random.Random(size).randbytes(side * side * 3)
        out = io.BytesIO()
        Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG", compress_level=1)
        _noise_cache[size] = out.getvalue()
    return _noise_cache[size]


def image_for(prompt: str) -> bytes:
    if m := _BYTES.search(prompt):
        return padded_png(prompt.encode(), int(m.group(1)))
    if m := _NOISE.search(prompt):
        return noise_png(int(m.group(1)))
    return small_png(prompt.encode(), side=16)


def _answer(part: dict[str, Any], model: str) -> bytes:
    return json.dumps(
        {
            "candidates": [
                {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
            ],
            "modelVersion": model,
            "usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 1},
        }
    ).encode()


def _prompt_of(body: dict[str, Any]) -> str:
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    texts = [
        part["text"]
        for content in contents
        for part in (content.get("parts") or [])
        if isinstance(part, dict) and "text" in part
    ]
    return "\n".join(texts)


class GeminiStub:
    """The ASGI app: `POST /{version}/models/{model}:generateContent`, `/stats`, `/reset`."""

    def __init__(self) -> None:
        self.by_prompt: Counter[str] = Counter()
        self.handler_ms: list[tuple[str, float, float]] = []
        self._noise_answers: dict[tuple[str, str], bytes] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/stats":
            return await _send_json(send, 200, self.stats())
        if path == "/reset":
            self.by_prompt.clear()
            self.handler_ms.clear()
            return await _send_json(send, 200, {"ok": True})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        started = time.perf_counter()
        received = time.time()
        model = path.rsplit("/", 1)[-1].partition(":")[0]
        try:
            request = json.loads(body)
        except ValueError:
            return await _send_json(send, 400, {"error": {"code": 400, "message": "not JSON"}})
        prompt = _prompt_of(request)
        if m := _DELAY.search(prompt):
            await asyncio.sleep(float(m.group(1)))  # the latency the prompt asks for
        if "image" not in model:  # the text model: prompt enhancement
            return await _send_raw(send, 200, _answer({"text": prompt}, model))
        noise = _NOISE.search(prompt)
        answer = self._noise_answers.get((noise.group(1), model)) if noise else None
        if answer is None:
            data = base64.b64encode(image_for(prompt)).decode()
            answer = _answer({"inlineData": {"mimeType": "image/png", "data": data}}, model)
            if noise:  # one noise image per size: keep the stub's own time small
                self._noise_answers[(noise.group(1), model)] = answer
        await _send_raw(send, 200, answer)
        self.by_prompt[prompt] += 1
        self.handler_ms.append((prompt, (time.perf_counter() - started) * 1000, received))

    def stats(self) -> dict[str, Any]:
        return {
            "generations": sum(self.by_prompt.values()),
            "by_prompt": dict(self.by_prompt),
            "handler_ms": self.handler_ms,
        }


async def _send_json(send: Any, status: int, payload: Any) -> None:
    await _send_raw(send, status, json.dumps(payload).encode())


async def _send_raw(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        GeminiStub(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
