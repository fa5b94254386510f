"""Per-request state shared by the API layer and the policy hooks.

One `RequestContext` lives for one client request. Policies read and change it
through documented attributes; nothing here knows about providers or HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class Decision:
    """What one policy decided about one exchange (never carries redacted values)."""

    policy: str
    action: str
    code: str | None = None
    detail: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Attempt:
    """One call to one upstream target: what came back and how long it took."""

    target: str
    outcome: str  # ok, client_error, 5xx, 429, connect, timeout
    status: int | None
    ms: float


@dataclass(slots=True)
class RequestContext:
    """Everything a policy may look at or change for one request.

    `raw_body` is what the client sent. `body` is its decoded form, made on first
    access; a request hook that changes it must call `mark_body_changed()` so the
    gateway re-encodes it instead of forwarding the original bytes.
    """

    request_id: str
    endpoint: str
    raw_body: bytes
    model: str
    stream: bool
    consumer: str | None = None
    target_id: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    started: float = field(default_factory=time.perf_counter)  # for durations
    ts: float = field(default_factory=time.time)  # wall clock, for records
    upstream_ms: float | None = None  # request sent upstream to its response headers
    ttft_ms: float | None = None  # request start to the first streamed byte written
    status: int | None = None
    error_code: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)  # upstream calls, in order
    usage: dict[str, Any] | None = None
    chunks: int = 0  # stream writes to the client (for /metrics)
    # Seconds each policy's request/response hooks took (for /metrics).
    policy_seconds: dict[str, float] = field(default_factory=dict)
    # A sampled stream: seconds of each stream filter call, by policy (for /metrics);
    # None for the streams that are not timed (see `CompiledChain.time_stream`).
    chunk_seconds: dict[str, list[float]] | None = None
    # The client's request headers (case-insensitive in the gateway), e.g. a
    # conversation id for `pii-detector`.
    headers: Mapping[str, str] = field(default_factory=dict)
    # Scratch space for policies (keyed by policy name), e.g. pseudonym tables.
    state: dict[str, Any] = field(default_factory=dict)
    _body: dict[str, Any] | None = None
    _body_changed: bool = False

    @property
    def body(self) -> dict[str, Any]:
        """The request body as a dict (decoded lazily; most requests never need it)."""
        if self._body is None:
            decoded = orjson.loads(self.raw_body)
            self._body = decoded if isinstance(decoded, dict) else {}
        return self._body

    def adopt_body(self, decoded: Any) -> None:
        """`body` as the request decoder already parsed it, so it is not parsed again."""
        self._body = decoded if isinstance(decoded, dict) else {}

    @property
    def body_changed(self) -> bool:
        """True once a hook changed `body` (the gateway then re-encodes it)."""
        return self._body_changed

    def mark_body_changed(self) -> None:
        """Record that `body` was changed and must be re-encoded before forwarding."""
        self._body_changed = True
