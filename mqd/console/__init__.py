"""The web console: four static files mqd serves to browsers, which then use the public API.

The page holds no data and no secret, so it is served without the access token (the page asks
for it and sends it as ``Authorization`` with each API call); everything it shows or does goes
through the same routes, the same guard and the same token as curl and mqctl. The files are read
once from the package (no build step, no CDN) and served with a strict Content-Security-Policy:
no inline script or style, nothing from another origin, no framing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from importlib import resources

from aiohttp import hdrs, web

PATH = "/console/"
# The routes' names: the guard serves these without the token (see security.py).
ROUTE_NAMES = frozenset(("console.door", "console.path", "console.file"))

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated by ETag: a new mqd's console is seen at once
}
FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
    "favicon.svg": ("favicon.svg", "image/svg+xml"),
}
MODE_PLACEHOLDER = b"{{mode}}"


@dataclasses.dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(mode: str) -> dict[str, Asset]:
    """The console's files, with the page told its mode (on or read-only)."""
    package = resources.files(__package__)
    assets = {}
    for name, (filename, content_type) in FILES.items():
        body = package.joinpath(filename).read_bytes().replace(MODE_PLACEHOLDER, mode.encode())
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[name] = Asset(body, content_type, etag)
    return assets


def add_routes(app: web.Application, mode: str) -> None:
    """``/`` sends browsers to the console (others get the API's 404, as before); ``/console/``
    serves it. Nothing when the console is off."""
    if mode == "off":
        return
    assets = load_assets(mode)

    async def door(request: web.Request) -> web.StreamResponse:
        if request.path == "/" and "text/html" not in request.headers.get(hdrs.ACCEPT, ""):
            # an API client asked for /: a 404, as before the console
            raise web.HTTPNotFound(text="There is no route /; see GET /openapi.json (browsers: /console/).")
        raise web.HTTPSeeOther(PATH)

    async def console_file(request: web.Request) -> web.StreamResponse:
        asset = assets.get(request.match_info["file"])
        if asset is None:
            raise web.HTTPNotFound(text=f"The console has no file {request.path}.")
        headers = {**HEADERS, hdrs.ETAG: asset.etag}
        if request.headers.get(hdrs.IF_NONE_MATCH) == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=asset.body, headers={**headers, hdrs.CONTENT_TYPE: asset.content_type})

    app.router.add_get("/", door, name="console.door", allow_head=False)
    app.router.add_get(PATH.rstrip("/"), door, name="console.path", allow_head=False)
    app.router.add_get(PATH + "{file:[^/]*}", console_file, name="console.file", allow_head=False)
