"""The aiohttp application factory.

`make_app(loaded)` wires routes, the error middleware and the long-lived resources.
Upstream connection pools and the runtime are created in `cleanup_ctx`, inside the running
loop, and torn down in reverse order on shutdown, even after a failed start.
`reload(app)` swaps in a re-read config without stopping (SIGHUP).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from ktproxy.api import (
    admin,
    admin_config,
    chat,
    health,
    messages,
    models,
    openapi,
    playground,
    stats,
)
from ktproxy.api.errors import error_middleware
from ktproxy.configcheck import ConfigError, LoadedConfig, load_config
from ktproxy.console.routes import add_console_routes
from ktproxy.fleet.backends import StateBackend, backend_key, open_backend
from ktproxy.metrics import METRICS, Metrics, metrics, mirror_ctx
from ktproxy.metrics_timeline import CHUNK_TIMELINE, ChunkTimeline, app_sources, timeline_ctx
from ktproxy.policies.resources import PolicyResources
from ktproxy.runtime import Runtime, build_runtime
from ktproxy.state import STATE, GatewayState

log = logging.getLogger("ktproxy.server")


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    runtime = None
    try:
        state.backend = _backend(state, state.loaded)
        state.backend_key = backend_key(state.loaded.config.state)
        runtime = _build(state, state.loaded, state.backend)
        await runtime.start()
        state.runtime = runtime
        yield
    finally:
        current, state.runtime = state.runtime, None
        try:
            if current is not None:
                await current.close()
            await state.resources.close()  # drains the audit queues
        finally:
            try:
                await state.backend.close()
            finally:
                await state.pool.close()


def _backend(state: GatewayState, loaded: LoadedConfig) -> StateBackend:
    """The worker's backend if `loaded` keeps it, else a new one for `loaded`."""
    if backend_key(loaded.config.state) == state.backend_key:
        return state.backend
    return open_backend(loaded.config.state, state.env)


def _build(state: GatewayState, loaded: LoadedConfig, backend: StateBackend) -> Runtime:
    state.resources.pseudonyms = backend.pseudonyms
    return build_runtime(
        loaded,
        state.pool,
        state.env,
        limiter=backend.limiter,
        resources=state.resources,
        budgets=backend.budgets,
    )


RELOAD_LOCK = web.AppKey("ktproxy.reload_lock", asyncio.Lock)


async def reload(app: web.Application, retire_timeout: float = 60.0) -> bool:
    """Re-read the config file and swap it in if it passes the check.

    A config with errors is refused (its problems logged) and the old one keeps
    serving. A good one is started and becomes the runtime of new requests at once;
    requests in flight finish on the old one, which is closed when the last of them
    ends (or after `retire_timeout` seconds). Reloads run one at a time, so after a
    burst of SIGHUPs the file read last is the one that serves.
    """
    async with app[RELOAD_LOCK]:
        return await _reload(app, retire_timeout)


async def _reload(app: web.Application, retire_timeout: float) -> bool:
    state = app[STATE]
    filename = state.loaded.filename
    try:
        loaded = load_config(filename, env=state.env)
    except ConfigError as exc:
        state.reloads["rejected"] = state.reloads.get("rejected", 0) + 1
        for problem in exc.problems:
            log.error("reload rejected: %s", problem.format(filename))
        return False
    backend = _backend(state, loaded)
    new = _build(state, loaded, backend)
    try:
        await new.start()
    except Exception:
        state.reloads["failed"] = state.reloads.get("failed", 0) + 1
        log.exception("reload failed while starting the new config; the old one keeps serving")
        if backend is not state.backend:
            await backend.close()
        return False
    old, state.runtime, state.loaded = state.runtime, new, loaded
    old_backend = state.backend
    state.backend, state.backend_key = backend, backend_key(loaded.config.state)
    state.reloads["applied"] = state.reloads.get("applied", 0) + 1
    for warning in loaded.warnings:
        log.warning("%s", warning.format(filename))
    log.info("config reloaded from %s", filename)
    retired = old_backend if old_backend is not backend else None
    if old is not None:
        asyncio.get_running_loop().create_task(_retire(state, old, retire_timeout, retired))
    elif retired is not None:
        await retired.close()
    return True


async def _retire(
    state: GatewayState, old: Runtime, timeout: float, backend: StateBackend | None = None
) -> None:
    """Close `old` (and `backend`, the state backend only it used) once it is idle."""
    deadline = asyncio.get_running_loop().time() + timeout
    while state.holders(old) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await old.close()
    if backend is not None:
        await backend.close()


def make_app(loaded: LoadedConfig, env: Mapping[str, str] | None = None) -> web.Application:
    """A gateway application serving `loaded`; upstream keys are read from `env`."""
    app = web.Application(middlewares=[error_middleware], client_max_size=0)
    app[STATE] = GatewayState(
        loaded,
        os.environ if env is None else env,
        resources=PolicyResources(loaded.config.gateway.instance),
    )
    app[METRICS] = Metrics(app[STATE])
    app[RELOAD_LOCK] = asyncio.Lock()
    app[CHUNK_TIMELINE] = ChunkTimeline(app_sources(app))
    app.cleanup_ctx.append(_runtime_ctx)
    app.cleanup_ctx.append(mirror_ctx)  # --workers: the state into the metrics files
    app.cleanup_ctx.append(timeline_ctx)  # the chunk-policy histogram's history: /v1/kt/stats
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
    app.router.add_get("/v1/kt/stats", stats.get_stats)
    app.router.add_get("/v1/kt/config", admin_config.get_config)
    app.router.add_post("/v1/kt/playground", playground.run_playground)
    add_console_routes(app)
    app.router.add_get("/openapi.json", openapi.openapi_json)
    return app
