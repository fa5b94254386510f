"""What a worker derives from a loaded config: router, policy chain, limits.

The config is immutable; a `Runtime` is built from it once per worker (and again on
reload) inside the running event loop, because provider adapters hold pooled
client sessions. Requests take the current runtime once, at their start, so a
reload never changes the rules under a request in flight.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ktproxy.config import target_timeouts
from ktproxy.configcheck import LoadedConfig
from ktproxy.policies import registry as policy_registry
from ktproxy.policies.chain import CompiledChain, compile_chain
from ktproxy.providers import registry as provider_registry
from ktproxy.providers.base import Provider
from ktproxy.providers.pool import SessionPool
from ktproxy.providers.router import Router


@dataclass(frozen=True, slots=True)
class Runtime:
    """Per-worker objects derived from one config."""

    loaded: LoadedConfig
    router: Router
    chain: CompiledChain
    max_body_bytes: int


def build_runtime(
    loaded: LoadedConfig, pool: SessionPool, env: Mapping[str, str] | None = None
) -> Runtime:
    """Instantiate adapters (with their keys and pooled sessions) and compile the chain."""
    env = os.environ if env is None else env
    config = loaded.config
    providers: list[Provider] = []
    for target in config.providers.targets:
        cls = provider_registry.provider_class(target.provider)
        key = env.get(target.secret_key_ref.env) if target.secret_key_ref else None
        session = (
            pool.session_for(target.base_url, target.max_connections)
            if target.base_url and target.provider in provider_registry.NETWORKED
            else None
        )
        providers.append(cls(target, target_timeouts(config, target), key or None, session))
    chain = compile_chain(
        config.policies.chain, dict(loaded.policy_options), policy_registry.POLICIES
    )
    return Runtime(loaded, Router(providers), chain, config.gateway.max_body_bytes)
