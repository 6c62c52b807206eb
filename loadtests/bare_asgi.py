"""The floor for any app on uvicorn: a bare ASGI callable answering with prepared responses.

Serves each file `NAME` of a folder at `/NAME`, with the headers listed in `NAME.headers.json`
(`[[name, value], ...]`, e.g. the edge's own), on the uvicorn settings `banatie serve` uses:

    python -m loadtests.bare_asgi --port 8080 --folder responses/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load(folder: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Path → the (start, body) ASGI messages to send for it."""
    responses = {}
    for file in folder.iterdir():
        if file.name.endswith(".headers.json") or not file.is_file():
            continue
        body = file.read_bytes()
        listed = folder / f"{file.name}.headers.json"
        if listed.exists():
            headers = [(k.encode(), v.encode()) for k, v in json.loads(listed.read_text())]
        else:
            headers = [(b"content-type", b"image/png"), (b"content-length", b"%d" % len(body))]
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        responses["/" + file.name] = (start, {"type": "http.response.body", "body": body})
    return responses


def app_for(folder: Path):  # type: ignore[no-untyped-def]
    responses = load(folder)
    missing = (
        {"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]},
        {"type": "http.response.body", "body": b""},
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            start, body = responses.get(scope["path"], missing)
            await send(start)
            await send(body)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app_for(args.folder),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
