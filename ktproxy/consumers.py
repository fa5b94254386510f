"""Consumer groups: who is calling, and which rules apply to them.

A request names its group with a gateway key, sent as `x-kt-api-key` or as the
bearer token. Keys are held only as sha256 digests (from the config, or hashed
once from the environment at start); a presented key is hashed and looked up, and
the digests are compared with `hmac.compare_digest`. A bearer token that is a
gateway key identifies the caller and is never forwarded upstream; any other
bearer token is the caller's provider key (DESIGN §1).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from ktproxy.config import Budgets, RateLimits
from ktproxy.policies.chain import CompiledChain


def key_digest(key: str) -> str:
    """The sha256 hex digest a key is known by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Group:
    """One consumer group as a worker uses it: compiled chain, models, limits."""

    id: str
    chain: CompiledChain
    # Model names the group may send, and the (target id, upstream model) routes they
    # resolve to (so `gpt-4o` and `openai:chat:gpt-4o` are the same permission).
    models: frozenset[str] | None = None
    routes: frozenset[tuple[str, str]] | None = None
    limits: RateLimits | None = None
    budgets: Budgets | None = None
    # Responses must be read for their token usage (audit records, a token limit, a
    # budget):
    # fixed by the config, so worked out once here rather than per request.
    needs_usage: bool = field(init=False)

    def __post_init__(self) -> None:
        tokens = self.limits is not None and self.limits.tokens_per_minute is not None
        budgets = self.budgets is not None and (
            self.budgets.tokens_per_day is not None or self.budgets.tokens_per_month is not None
        )
        needs = self.chain.has_complete_hooks or tokens or budgets
        object.__setattr__(self, "needs_usage", needs)

    def allows(self, model: str, route: tuple[str, str]) -> bool:
        """May this group use `model`, which resolved to `route`?"""
        if self.models is None:
            return True
        return model in self.models or (self.routes is not None and route in self.routes)


@dataclass(frozen=True, slots=True)
class Identity:
    """The outcome of looking at a request's keys."""

    group: Group | None  # None: refused (a key is required and none matched)
    bearer_is_gateway_key: bool = False  # then it must not be forwarded upstream
    presented: bool = False  # a gateway key was presented (known or not)


class ConsumerTable:
    """Groups and key digests of one runtime."""

    def __init__(
        self,
        groups: Mapping[str, Group],
        default: Group,
        keys: Mapping[str, str],
        require_key: bool,
    ) -> None:
        self.groups = dict(groups)
        self.default = default
        self._keys = {d.encode(): gid for d, gid in keys.items()}  # digest -> group id
        self.require_key = require_key

    def _lookup(self, key: str) -> Group | None:
        digest = key_digest(key).encode()
        found: str | None = None
        # Every known digest is compared, each in constant time, with no early exit:
        # how long this takes says nothing about which key came close.
        for known, gid in self._keys.items():
            if hmac.compare_digest(known, digest):
                found = gid
        return self.groups.get(found) if found is not None else None

    def identify(self, header_key: str | None, bearer: str | None) -> Identity:
        """The group of a request from its `x-kt-api-key` and bearer token."""
        if header_key:
            group = self._lookup(header_key)
            if group is not None:
                return Identity(group, False, True)
            return Identity(None if self.require_key else self.default, False, True)
        if bearer:
            group = self._lookup(bearer)
            if group is not None:
                return Identity(group, True, True)
        return Identity(None if self.require_key else self.default)
