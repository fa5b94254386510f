"""Serving the console: an HTML shell at `/console` and content-hashed static assets.

The console is plain files shipped as package data (`ktproxy/console/static/`), read
once through `importlib.resources` when the app is built, so it works from an
installed wheel with no build step. Each asset is served under a name that carries
the first 12 hex digits of its sha256 (`console.3f2a9c01b7de.js`) and is cached for
a year as immutable; the shell (which names the hashed files) is revalidated on every
load, so a new release is picked up at once and never mixed with stale assets.

The shell holds no data and needs no key: the page signs in and reads everything
through the admin API. Every console response carries a strict Content-Security-Policy
(no inline script or style, same-origin only, not framable).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from ktproxy.errors import GatewayError

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".html": "text/html",
}
_PLACEHOLDER = re.compile(r"\{\{asset:([A-Za-z0-9_.-]+)\}\}")
_SHELL = "index.html"


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: body, content type and strong validator."""

    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class ConsoleFiles:
    """The shell and the hashed assets, keyed by the name they are served under."""

    shell: Asset
    assets: dict[str, Asset]


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def hashed_name(name: str, body: bytes) -> str:
    """`console.js` → `console.<sha256-12>.js`."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{_digest(body)[:12]}{dot}{ext}"


def load_files() -> ConsoleFiles:
    """Read the static folder once; the shell's `{{asset:NAME}}` become hashed URLs."""
    folder = resources.files("ktproxy.console").joinpath("static")
    assets: dict[str, Asset] = {}
    urls: dict[str, str] = {}
    shell_text = ""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.is_file():
            continue
        body = entry.read_bytes()
        if entry.name == _SHELL:
            shell_text = body.decode("utf-8")
            continue
        ext = "." + entry.name.rpartition(".")[2]
        if ext not in _TYPES:
            continue
        served = hashed_name(entry.name, body)
        charset = "; charset=utf-8" if ext != ".svg" else ""
        assets[served] = Asset(body, _TYPES[ext] + charset, f'"{_digest(body)[:32]}"')
        urls[entry.name] = f"/console/static/{served}"

    def url(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in urls:
            raise RuntimeError(f"console shell names a missing asset: {name}")
        return urls[name]

    shell = _PLACEHOLDER.sub(url, shell_text).encode("utf-8")
    return ConsoleFiles(
        Asset(shell, "text/html; charset=utf-8", f'"{_digest(shell)[:32]}"'), assets
    )


def _respond(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if asset.etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


def _etags(header: str) -> set[str]:
    tags = {t.strip() for t in header.split(",") if t.strip()}
    return tags | {t[2:] for t in tags if t.startswith("W/")}


def add_console_routes(app: web.Application) -> None:
    """Register `/console`, `/console/` and `/console/static/{name}` on `app`."""
    files = load_files()

    async def shell(request: web.Request) -> web.Response:
        return _respond(request, files.shell, "no-cache")

    async def static(request: web.Request) -> web.Response:
        asset = files.assets.get(request.match_info["name"])
        if asset is None:  # names are looked up, never joined to a path: no traversal
            raise GatewayError(
                404,
                "No such console asset.",
                type="not_found_error",
                code="asset_not_found",
                headers=SECURITY_HEADERS,
            )
        return _respond(request, asset, IMMUTABLE)

    app.router.add_get("/console", shell)
    app.router.add_get("/console/", shell)
    app.router.add_get("/console/static/{name}", static)
