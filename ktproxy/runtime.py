"""What a worker derives from a loaded config: router, policy chain, limits.

The config is immutable; a `Runtime` is built from it once per worker (and again on
reload) inside the running event loop, because provider adapters hold
connection pools. Requests take the current runtime once, at their start, so a
reload never changes the rules under a request in flight.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ktproxy.budgets import BudgetKeeper, LocalBudgets
from ktproxy.config import ConsumerGroup, KeyRef, target_timeouts
from ktproxy.configcheck import LoadedConfig
from ktproxy.consumers import ConsumerTable, Group, key_digest
from ktproxy.limits import LocalRateLimiter, RateLimiter
from ktproxy.policies import registry as policy_registry
from ktproxy.policies.base import Policy
from ktproxy.policies.chain import CompiledChain
from ktproxy.policies.resources import PolicyResources
from ktproxy.providers import registry as provider_registry
from ktproxy.providers.base import Provider
from ktproxy.providers.http import tls_settings
from ktproxy.providers.pool import UpstreamPool
from ktproxy.providers.router import Router
from ktproxy.providers.routing import AttemptRunner, Breakers, RoutePlanner


@dataclass(frozen=True, slots=True)
class Runtime:
    """Per-worker objects derived from one config."""

    loaded: LoadedConfig
    router: Router
    chain: CompiledChain  # the default group's chain
    max_body_bytes: int
    consumers: ConsumerTable
    limiter: RateLimiter
    resources: PolicyResources
    planner: RoutePlanner
    attempts: AttemptRunner
    admin_key: str | None = None  # sha256 digest of the admin key; None: admin API off
    # Per worker, at once (`gateway.max_concurrent_*`); beyond them: 503.
    max_requests: int = 1024
    max_streams: int = 1024
    retry_after: int = 1  # seconds, in the 503's Retry-After
    budgets: BudgetKeeper = field(default_factory=LocalBudgets)

    @property
    def policies(self) -> list[Policy]:
        """Every distinct policy instance of every group's chain."""
        seen: dict[int, Policy] = {}
        for group in [self.consumers.default, *self.consumers.groups.values()]:
            for policy in group.chain.policies:
                seen.setdefault(id(policy), policy)
        return list(seen.values())

    async def start(self) -> None:
        """Start the policies' long-lived resources (audit writers, ...)."""
        for policy in self.policies:
            await policy.start(self.resources)

    async def close(self) -> None:
        """Stop the policies' resources of this runtime. The shared `resources` (audit
        writers) belong to the worker, which closes them once, at exit."""
        for policy in self.policies:
            await policy.close()


def _env_digest(ref: KeyRef, env: Mapping[str, str]) -> str | None:
    if ref.sha256 is not None:
        return ref.sha256
    value = env.get(ref.env or "")
    return key_digest(value) if value else None


def _group(
    spec: ConsumerGroup, loaded: LoadedConfig, router: Router, cache: dict[object, Policy]
) -> Group:
    config = loaded.config
    names = spec.chain if spec.chain is not None else config.policies.chain
    options = {**loaded.policy_options, **loaded.group_options.get(spec.id, {})}
    chain = _compile(names, options, cache)
    models = routes = None
    if spec.models is not None:
        models = frozenset(spec.models)
        found = (router.resolve(m) for m in spec.models)
        routes = frozenset((r.provider.target.id, r.upstream_model) for r in found if r)
    return Group(spec.id, chain, models, routes, spec.limits, spec.budgets)


def _compile(
    names: Sequence[str], options: Mapping[str, Any], cache: dict[object, Policy]
) -> CompiledChain:
    """The chain of `names`; a policy with the same options is one shared instance."""
    policies = []
    for name in names:
        cls = policy_registry.POLICIES[name]
        opts = options.get(name, cls.Options())
        key = (name, msgspec.json.encode(opts))
        policy = cache.get(key)
        if policy is None:
            policy = cache[key] = cls(opts)
        policies.append(policy)
    return CompiledChain(policies)


def build_runtime(
    loaded: LoadedConfig,
    pool: UpstreamPool,
    env: Mapping[str, str] | None = None,
    limiter: RateLimiter | None = None,
    resources: PolicyResources | None = None,
    budgets: BudgetKeeper | None = None,
) -> Runtime:
    """Instantiate adapters (with their keys and pooled connections), compile each consumer
    group's chain, and index the gateway keys. Call `start()` before serving."""
    env = os.environ if env is None else env
    config = loaded.config
    providers: list[Provider] = []
    for target in config.providers.targets:
        cls = provider_registry.provider_class(target.provider)
        key = env.get(target.secret_key_ref.env) if target.secret_key_ref else None
        origin = (
            pool.pool_for(target.base_url, target.max_connections, tls_settings(target))
            if target.base_url and target.provider in provider_registry.NETWORKED
            else None
        )
        providers.append(cls(target, target_timeouts(config, target), key or None, origin))
    router = Router(providers)
    cache: dict[object, Policy] = {}
    groups = {spec.id: _group(spec, loaded, router, cache) for spec in config.consumers.groups}
    default = groups.get(config.consumers.default_group) or Group(
        config.consumers.default_group,
        _compile(config.policies.chain, loaded.policy_options, cache),
    )
    keys = {
        digest: spec.id
        for spec in config.consumers.groups
        for ref in spec.keys
        if (digest := _env_digest(ref, env)) is not None
    }
    consumers = ConsumerTable(groups, default, keys, config.consumers.require_key)
    admin = config.admin.key
    return Runtime(
        loaded,
        router,
        default.chain,
        config.gateway.max_body_bytes,
        consumers,
        limiter or LocalRateLimiter(),
        resources or PolicyResources(config.gateway.instance),
        RoutePlanner(router, config.routing),
        AttemptRunner(config.routing, Breakers(config.routing.circuit_breaker)),
        _env_digest(admin, env) if admin is not None else None,
        max_requests=config.gateway.max_concurrent_requests,
        max_streams=config.gateway.max_concurrent_streams,
        retry_after=config.gateway.overload_retry_after,
        budgets=budgets or LocalBudgets(),
    )
