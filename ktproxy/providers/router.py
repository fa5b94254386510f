"""Model router: which target serves the model name a client sent.

A client may name a target's `model`, its `id`, or the explicit form
`<provider>:chat:<model>` (DESIGN §2). Resolution is by exact match in config order,
precomputed into dicts once per config so a request pays one or two lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ktproxy.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Route:
    """The provider to call and the model name to send it."""

    provider: Provider
    upstream_model: str


class Router:
    """Resolves model names to routes; built once per config."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = tuple(providers)
        self._exact: dict[str, Route] = {}
        by_model: dict[str, Route] = {}
        by_id: dict[str, Route] = {}
        self._by_kind: dict[str, list[Provider]] = {}
        for p in providers:
            by_model.setdefault(p.target.model, Route(p, p.target.model))
            by_id.setdefault(p.target.id, Route(p, p.target.model))
            self._by_kind.setdefault(p.kind, []).append(p)
        # A target's model name wins over another target's id of the same spelling.
        self._exact = {**by_id, **by_model}

    def resolve(self, model: str) -> Route | None:
        """The route for `model`, or None when no target serves it."""
        route = self._exact.get(model)
        if route is not None:
            return route
        kind, sep, rest = model.partition(":chat:")
        if not sep or not rest:
            return None
        candidates = self._by_kind.get(kind)
        if not candidates:
            return None
        for p in candidates:
            if p.target.model == rest:
                return Route(p, rest)
        return Route(candidates[0], rest)

    def listed_models(self) -> list[tuple[str, str]]:
        """(model id, owner) pairs for `GET /v1/models`, without duplicates, in config order."""
        seen: dict[str, str] = {}
        for p in self.providers:
            for name in (*p.list_models(), p.target.id):
                seen.setdefault(name, p.kind)
        return list(seen.items())
