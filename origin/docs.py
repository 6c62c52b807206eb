"""`/docs`: Swagger UI over `/openapi.json`, every byte served by the origin itself.

The Swagger UI build comes from the `flask-swagger-ui` wheel, which tracks Swagger UI releases
(its version is Swagger UI's) and ships the upstream `dist/` files (Apache-2.0). Only those files
are used: the package is located, never imported, so Flask is not loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from cache.errors import NotFound


def _dist() -> Path:
    spec = importlib.util.find_spec("flask_swagger_ui")  # finds it without running Flask code
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the flask-swagger-ui package (Swagger UI's files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


DIST = _dist()
# The files the page loads; anything else in the package is not served.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
ASSET_CACHE = "public, max-age=3600"  # not immutable: the file names carry no version

# Swagger UI starts from a script file of ours, not an inline one, so the CSP needs no
# 'unsafe-inline' for scripts. Requests from "Try it out" go to the document's server
# (PUBLIC_URL), which is this origin when the docs are read through it.
INIT_JS = """\
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    validatorUrl: null,
    tryItOutEnabled: false
  });
});
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>banatie API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
  <noscript>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/init.js"></script>
</body>
</html>
"""

# Only this origin, and no inline script or style: Swagger UI 5 sets styles through the DOM
# (which style-src does not govern), so it needs no 'unsafe-inline' (tests/test_docs.py watches
# for violations while it renders, authorizes and runs a request). data: is for its SVG icons.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# X-Content-Type-Options: nosniff comes with every origin response (origin/app.py, RequestId).
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"}


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    headers = {**SECURITY_HEADERS, "Cache-Control": ASSET_CACHE}
    if name == "init.js":
        return Response(INIT_JS, media_type="text/javascript; charset=utf-8", headers=headers)
    if name not in ASSETS:
        raise NotFound("No such docs asset.")
    return FileResponse(DIST / name, media_type=ASSETS[name], headers=headers)


routes = [
    Route("/docs", page),
    Route("/docs/assets/{name}", asset),
]
