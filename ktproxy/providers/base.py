"""The adapter contract between the API layer and an upstream provider.

The API layer speaks OpenAI's chat format; an adapter takes an OpenAI chat request
and returns an `UpstreamResponse` whose body (or SSE stream) is again OpenAI's
format, whatever the provider speaks underneath. Adapters raise `GatewayError` for
failures the client should see as 502/504.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ktproxy.config import Target, Timeouts

if TYPE_CHECKING:  # the pool imports nothing from here; adapters get one from the runtime
    from ktproxy.providers.pool import OriginPool


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One chat request for a provider: OpenAI JSON body (model already set)."""

    body: bytes
    stream: bool
    api_key: str | None
    request_id: str
    # Client headers an upstream may legitimately care about (allow-listed).
    headers: Mapping[str, str]


class UpstreamResponse(abc.ABC):
    """A provider's answer: status and headers first, then the body or a stream."""

    status: int
    headers: Mapping[str, str]
    is_event_stream: bool

    @abc.abstractmethod
    async def read(self) -> bytes:
        """The whole body (OpenAI JSON for a 200)."""

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """Raw OpenAI-format SSE bytes as they arrive (any boundaries)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the upstream connection; aborts it when the body was not read whole."""


class Provider(abc.ABC):
    """One configured target's adapter."""

    kind: ClassVar[str]
    # False for upstreams that need no key (a local Ollama): no 401 for a missing one.
    requires_key: ClassVar[bool] = True

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        api_key: str | None,
        pool: OriginPool | None,
    ) -> None:
        self.target = target
        self.timeouts = timeouts
        self.api_key = api_key
        self.pool = pool

    @abc.abstractmethod
    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        """Send an OpenAI chat completion request; return once the status is known."""

    def list_models(self) -> list[str]:
        """Model names this target answers to, for `GET /v1/models`."""
        return [self.target.model]
