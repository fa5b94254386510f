"""`GET /v1/models`: the model names this gateway routes, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ktproxy.api.identity import caller_group
from ktproxy.consumers import Group
from ktproxy.errors import model_not_allowed, model_not_found
from ktproxy.runtime import Runtime
from ktproxy.state import STATE


def _model(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def _allowed(group: Group, runtime: Runtime, name: str) -> bool:
    route = runtime.router.resolve(name)
    return route is not None and group.allows(
        name, (route.provider.target.id, route.upstream_model)
    )


async def list_models(request: web.Request) -> web.Response:
    """Every target's model and id, each once, in config order (those the caller's
    consumer group may use)."""
    runtime = request.app[STATE].runtime
    assert runtime is not None
    group = caller_group(request, runtime)
    data = [
        _model(name, owner)
        for name, owner in runtime.router.listed_models()
        if _allowed(group, runtime, name)
    ]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """One model by name (any name the router resolves, `<provider>:chat:<m>` included)."""
    runtime = request.app[STATE].runtime
    assert runtime is not None
    group = caller_group(request, runtime)
    name = request.match_info["model"]
    route = runtime.router.resolve(name)
    if route is None:
        raise model_not_found(name)
    if not _allowed(group, runtime, name):
        raise model_not_allowed(name, group.id)
    return web.json_response(_model(name, route.provider.kind))
