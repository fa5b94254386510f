"""Per-worker mutable state, stored on the application under a typed key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from weakref import WeakSet

from aiohttp import web

from ktproxy.configcheck import LoadedConfig
from ktproxy.fleet.backends import MemoryBackend, StateBackend
from ktproxy.policies.resources import PolicyResources
from ktproxy.providers.pool import UpstreamPool
from ktproxy.runtime import Runtime

if TYPE_CHECKING:
    from ktproxy.api.stream_rewriter import StreamRewriter


@dataclass(eq=False)
class GatewayState:
    """The current runtime (swapped whole on reload), readiness and in-flight counts.

    A request takes the current runtime once, at its start, and holds it
    (`acquire`/`release`) until it ends, so a reload never changes the rules under a
    request in flight; a retired runtime is closed once nothing holds it.
    """

    loaded: LoadedConfig
    # Where `secret_key_ref: {env: ...}` values are read from (the process environment).
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    pool: UpstreamPool = field(default_factory=UpstreamPool)
    # Shared across reloads: one audit writer per sink whatever the config generation,
    # and rate-limit and budget counters that a reload does not reset (a reload that
    # changes the `state:` section gets a new backend; see `backend_key`).
    resources: PolicyResources = field(default_factory=PolicyResources)
    backend: StateBackend = field(default_factory=MemoryBackend)
    backend_key: object = "memory"
    runtime: Runtime | None = None
    draining: bool = False
    inflight: int = 0
    streams: int = 0  # streaming requests admitted and not finished
    # "requests" | "streams" -> requests refused with 503 (a concurrency limit), for /metrics
    overloaded: dict[str, int] = field(default_factory=dict)
    reloads: dict[str, int] = field(default_factory=dict)  # outcome -> count, for /metrics
    # The open streams' rewriters, for the hold-back gauges read at scrape time.
    rewriters: WeakSet[StreamRewriter] = field(default_factory=WeakSet)
    _holders: dict[int, int] = field(default_factory=dict)  # id(runtime) -> requests

    @property
    def ready(self) -> bool:
        """True while the worker has a runtime and is not draining."""
        return self.runtime is not None and not self.draining

    def acquire(self) -> Runtime | None:
        """The current runtime, held by the caller until `release`."""
        runtime = self.runtime
        if runtime is not None:
            key = id(runtime)
            self._holders[key] = self._holders.get(key, 0) + 1
        self.inflight += 1
        return runtime

    def release(self, runtime: Runtime | None) -> None:
        """The caller no longer uses `runtime`."""
        self.inflight -= 1
        if runtime is not None:
            key = id(runtime)
            left = self._holders.get(key, 0) - 1
            if left > 0:
                self._holders[key] = left
            else:
                self._holders.pop(key, None)

    def holders(self, runtime: Runtime) -> int:
        """Requests still using `runtime`."""
        return self._holders.get(id(runtime), 0)


STATE = web.AppKey("ktproxy.state", GatewayState)
