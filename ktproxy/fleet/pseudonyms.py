"""The pseudonym vault: one value <-> placeholder table per (consumer group, conversation).

`pii-detector` with `scope: conversation` asks it for the placeholders of a request's
values, so one value keeps one placeholder (`<EMAIL_1>`) across the turns of a
conversation and, with the Redis backend, across gateways. This module holds the
protocol and the in-process table; `redis_pseudonyms` the shared one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class PseudonymVault(Protocol):
    """Where conversation-scoped pseudonyms live."""

    async def assign(
        self, group: str, conversation: str, ttl: float, values: Sequence[tuple[str, str]]
    ) -> dict[str, str] | None:
        """Give each (value, kind name) of `values` its placeholder in the conversation,
        a new one (`<KIND_n>`, numbered per kind) if it has none yet, and keep the
        conversation `ttl` seconds from now. Returns placeholder -> value for the whole
        conversation, or None when the backend failed and the feature fails open (a
        failure that fails closed raises `StateUnavailable`)."""


def placeholder(kind: str, number: int) -> str:
    """`<EMAIL_1>`: the form every vault and the per-request table use."""
    return f"<{kind}_{number}>"


@dataclass(slots=True)
class _Table:
    expires: float
    forward: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, value)
    reverse: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class MemoryPseudonyms:
    """Tables in this process (each worker its own), the least recently used dropped
    beyond `max_conversations`, each expiring `ttl` seconds after its last turn."""

    def __init__(
        self, max_conversations: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_conversations
        self._now = clock
        self._tables: OrderedDict[tuple[str, str], _Table] = OrderedDict()

    async def assign(
        self, group: str, conversation: str, ttl: float, values: Sequence[tuple[str, str]]
    ) -> dict[str, str]:
        now = self._now()
        key = (group, conversation)
        table = self._tables.get(key)
        if table is None or table.expires <= now:
            table = _Table(now + ttl)
        table.expires = now + ttl
        self._tables[key] = table
        self._tables.move_to_end(key)
        while len(self._tables) > self._max:
            self._tables.popitem(last=False)
        for value, kind in values:
            if (kind, value) in table.forward:
                continue
            number = table.counts.get(kind, 0) + 1
            table.counts[kind] = number
            token = placeholder(kind, number)
            table.forward[(kind, value)] = token
            table.reverse[token] = value
        return dict(table.reverse)
