"""The Redis state backend: one pooled client for rate limits, budgets and pseudonyms."""

from __future__ import annotations

from collections.abc import Mapping

from ktproxy.config import State
from ktproxy.fleet.redis_budgets import RedisBudgets
from ktproxy.fleet.redis_client import Guard, connect
from ktproxy.fleet.redis_limits import RedisRateLimiter
from ktproxy.fleet.redis_pseudonyms import RedisPseudonyms


class RedisBackend:
    """Counters shared through Redis by every gateway using the same key prefix."""

    def __init__(self, state: State, env: Mapping[str, str]) -> None:
        spec = state.redis
        if spec is None:  # the config check refuses this; kept for direct callers
            raise ValueError("state.backend is redis but there is no state.redis section")
        self.client = connect(spec, env)
        self.guard = Guard(spec.retry_interval)
        self.limiter = RedisRateLimiter(
            self.client, spec.key_prefix, self.guard, state.rate_limits.on_backend_error
        )
        self.budgets = RedisBudgets(
            self.client, spec.key_prefix, self.guard, state.budgets.on_backend_error
        )
        secret = None
        if spec.encryption_key_ref is not None:
            secret = env.get(spec.encryption_key_ref.env)
            if not secret:
                raise ValueError(
                    f"environment variable {spec.encryption_key_ref.env} "
                    "(state.redis.encryption_key_ref) is not set"
                )
        self.pseudonyms = RedisPseudonyms(
            self.client, spec.key_prefix, self.guard, state.pseudonyms.on_backend_error, secret
        )
        self.errors = self.guard.errors

    @classmethod
    def from_config(cls, state: State, env: Mapping[str, str]) -> RedisBackend:
        return cls(state, env)

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
