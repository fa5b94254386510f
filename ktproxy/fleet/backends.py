"""The state-backend registry: `state.backend` names the class that keeps the counters."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol

from ktproxy.budgets import BudgetKeeper, LocalBudgets
from ktproxy.config import State
from ktproxy.fleet.pseudonyms import MemoryPseudonyms, PseudonymVault
from ktproxy.limits import LocalRateLimiter, RateLimiter


class StateBackend(Protocol):
    """A rate limiter, a budget keeper and a pseudonym vault sharing one store."""

    @property
    def limiter(self) -> RateLimiter: ...

    @property
    def budgets(self) -> BudgetKeeper: ...

    @property
    def pseudonyms(self) -> PseudonymVault: ...

    @property
    def errors(self) -> dict[tuple[str, str], int]:
        """(feature, "served" | "refused") -> requests decided without the backend."""

    async def close(self) -> None:
        """Release the store's connections (once, when no runtime uses it any more)."""


class MemoryBackend:
    """Counters in this process: the embedded default, needing no server."""

    def __init__(self) -> None:
        self.limiter = LocalRateLimiter()
        self.budgets = LocalBudgets()
        self.pseudonyms = MemoryPseudonyms()
        self.errors: dict[tuple[str, str], int] = {}

    @classmethod
    def from_config(cls, state: State, env: Mapping[str, str]) -> MemoryBackend:
        return cls()

    async def close(self) -> None:
        pass


# name -> "module:Class"; imported on use, so `memory` never imports redis.
BACKENDS = {
    "memory": "ktproxy.fleet.backends:MemoryBackend",
    "redis": "ktproxy.fleet.redis_backend:RedisBackend",
}


def open_backend(state: State, env: Mapping[str, str]) -> StateBackend:
    """The backend `state` names (its connections are opened lazily, on first use)."""
    module, _, name = BACKENDS[state.backend].partition(":")
    cls = getattr(importlib.import_module(module), name)
    backend: StateBackend = cls.from_config(state, env)
    return backend


def backend_key(state: State) -> object:
    """What decides whether a reload keeps the backend (and its counters): the memory
    backend is kept whatever else changes; a Redis one is rebuilt when any of its
    settings change (its counters live in Redis, so nothing is lost)."""
    return "memory" if state.backend == "memory" else state
