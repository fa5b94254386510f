"""Per-worker mutable state, stored on the application under a typed key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from ktproxy.configcheck import LoadedConfig
from ktproxy.providers.pool import SessionPool
from ktproxy.runtime import Runtime


@dataclass(eq=False)
class GatewayState:
    """The current runtime (swapped whole on reload), readiness and in-flight count."""

    loaded: LoadedConfig
    # Where `secret_key_ref: {env: ...}` values are read from (the process environment).
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    pool: SessionPool = field(default_factory=SessionPool)
    runtime: Runtime | None = None
    draining: bool = False
    inflight: int = 0

    @property
    def ready(self) -> bool:
        """True while the worker has a runtime and is not draining."""
        return self.runtime is not None and not self.draining


STATE = web.AppKey("ktproxy.state", GatewayState)
