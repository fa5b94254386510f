"""The aiohttp application factory.

`make_app(loaded)` wires routes, the error middleware and the long-lived resources.
Upstream sessions and the runtime are created in `cleanup_ctx`, inside the running
loop, and torn down in reverse order on shutdown, even after a failed start.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from ktproxy.api import admin, chat, health, messages, models
from ktproxy.api.errors import error_middleware
from ktproxy.configcheck import LoadedConfig
from ktproxy.metrics import METRICS, metrics, registry_for
from ktproxy.runtime import build_runtime
from ktproxy.state import STATE, GatewayState


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    runtime = None
    try:
        runtime = build_runtime(state.loaded, state.pool, state.env)
        await runtime.start()
        state.runtime = runtime
        yield
    finally:
        state.runtime = None
        try:
            if runtime is not None:
                await runtime.close()  # drains the audit queues
        finally:
            await state.pool.close()


def make_app(loaded: LoadedConfig, env: Mapping[str, str] | None = None) -> web.Application:
    """A gateway application serving `loaded`; upstream keys are read from `env`."""
    app = web.Application(middlewares=[error_middleware], client_max_size=0)
    app[STATE] = GatewayState(loaded, os.environ if env is None else env)
    app[METRICS] = registry_for(app)
    app.cleanup_ctx.append(_runtime_ctx)
    app.router.add_post("/v1/chat/completions", chat.chat_completions)
    app.router.add_post("/chat/completions", chat.chat_completions)
    app.router.add_post("/v1/messages", messages.messages)
    app.router.add_get("/v1/models", models.list_models)
    app.router.add_get("/v1/models/{model:.+}", models.get_model)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/kt/events", admin.list_events)
    app.router.add_get("/v1/kt/events/{id}", admin.get_event)
    return app
