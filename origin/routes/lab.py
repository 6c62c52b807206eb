"""HTTP: /lab, the web UI (static files shipped in origin/lab/, talking to the public API)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cache.errors import NotFound
from cache.settings import Settings

ASSETS = Path(__file__).resolve().parent.parent / "lab"
MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "lab.js": "text/javascript; charset=utf-8",
    "lab.css": "text/css; charset=utf-8",
}
# Every page is index.html; lab.js draws the one the path names.
PAGE = re.compile(
    r"^(|generate|live|upload|scopes|flows|flows/[A-Za-z0-9_-]{1,64}|images/[A-Za-z0-9@_-]{1,64})$"
)


def content_security_policy(settings: Settings) -> str:
    """Scripts and styles from here only; images also from PUBLIC_URL (the split layout);
    fetches only to this origin, so the key in the page goes nowhere else."""
    public = urlsplit(settings.public_url)
    images = f" {public.scheme}://{public.netloc}" if public.netloc else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' blob: data:{images}; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def _file(name: str, csp: str) -> Response:
    return Response(
        (ASSETS / name).read_bytes(),
        media_type=MEDIA_TYPES[name],
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-cache",  # a new install's Lab is picked up at once
            "Referrer-Policy": "no-referrer",
        },
    )


def lab_routes(settings: Settings) -> list[BaseRoute]:
    csp = content_security_policy(settings)

    async def lab(request: Request) -> Response:
        path: str = request.path_params.get("path", "")
        if path in MEDIA_TYPES and path != "index.html":
            return _file(path, csp)
        if not PAGE.match(path):
            raise NotFound("No such page in the Lab.")
        return _file("index.html", csp)

    async def home(request: Request) -> Response:
        return RedirectResponse("/lab", status_code=302)

    return [
        Route("/", home, methods=["GET", "HEAD"]),
        Route("/lab", lab, methods=["GET", "HEAD"]),
        Route("/lab/{path:path}", lab, methods=["GET", "HEAD"]),
    ]
