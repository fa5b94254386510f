"""The policy contract: a name, a typed options Struct, and only the hooks it needs.

A policy subclasses `Policy` and defines any of the hooks below. The chain looks at
which hooks a class actually overrides when it is compiled, so a hook a policy does
not define costs nothing per request or per chunk.

Hooks, in the order they fire:

- `on_request(ctx)` — before the request leaves the gateway. May change
  `ctx.body` (then call `ctx.mark_body_changed()`), or raise `PolicyViolation` to
  stop the request with HTTP 422. May be `async def`.
- `on_response(ctx, body)` — for a whole (non-streamed) response, `body` being the
  decoded JSON dict. Returns True when it changed `body`. May be `async def`.
- `stream_filter(ctx, choice_index)` — once per streamed choice; returns a
  `StreamFilter` fed every text delta of that choice, or None to skip it.
- `tool_args_filter(ctx, choice_index, call_index)` — once per streamed tool call;
  like `stream_filter`, fed the call's `function.arguments` fragments (JSON text).
- `on_complete(ctx)` — after the exchange ended (success, error or block); for
  bookkeeping such as audit records. Must not raise. May be `async def`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import msgspec

if TYPE_CHECKING:
    from ktproxy.policies.resources import PolicyResources


class NoOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options of a policy that takes none."""


class PolicyViolation(Exception):
    """Raised by a hook to block the exchange; becomes HTTP 422 (or an SSE error)."""

    def __init__(self, policy: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.policy = policy
        self.rule = rule
        self.message = message

    @property
    def code(self) -> str:
        """The error code clients see: `<policy>.<rule>`, the policy name with `_` for `-`
        (`prompt_injection.instruction_override`, `pii_detector.email`)."""
        return f"{self.policy.replace('-', '_')}.{self.rule}"


class StreamFilter(Protocol):
    """Per-choice text filter for streamed responses.

    `feed` receives each text delta and returns the text that may be sent now; text
    it holds back (because a later delta could change how it must be rewritten) is
    returned by a later `feed` or by `flush`, which is called before the chunk that
    carries the choice's `finish_reason` and at the end of the stream.
    """

    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


HOOKS = ("on_request", "on_response", "stream_filter", "tool_args_filter", "on_complete")


class Policy:
    """Base class of every policy. Subclasses set `name` and, if any, `Options`."""

    name: ClassVar[str]
    Options: ClassVar[type[msgspec.Struct]] = NoOptions

    def __init__(self, options: Any) -> None:
        self.options = options

    async def start(self, resources: PolicyResources) -> None:
        """Acquire long-lived resources (writers, connections) before serving. Called
        once per runtime for each distinct policy instance; most policies need none."""

    async def close(self) -> None:
        """Release what `start` acquired; called when the runtime is retired."""

    def enabled_hooks(self) -> frozenset[str]:
        """The hooks this instance uses: every hook its class defines, unless its
        options make some pointless (the chain then skips them at no cost)."""
        return frozenset(h for h in HOOKS if callable(getattr(type(self), h, None)))
