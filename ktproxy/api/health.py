"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from aiohttp import web

from ktproxy.state import STATE


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers HTTP. Never depends on upstreams."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: a config is loaded and the worker is not draining (503 otherwise)."""
    state = request.app[STATE]
    if state.ready:
        return web.json_response({"status": "ready"})
    reason = "draining" if state.draining else "starting"
    return web.json_response({"status": reason}, status=503)
