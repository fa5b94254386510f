"""Small test-only policies that exercise every hook point of the chain.

They are registered for a test and removed after it; the product's own policies
are tested in their own modules.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from ktproxy.context import Decision, RequestContext
from ktproxy.policies.base import Policy, PolicyViolation


def _texts(ctx: RequestContext) -> list[str]:
    return [m.get("content") for m in ctx.body["messages"] if isinstance(m.get("content"), str)]


class BlockOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    word: str = "forbidden"


class BlockWord(Policy):
    """Blocks a request whose messages contain a configured word."""

    name = "test-block"
    Options = BlockOptions

    def on_request(self, ctx: RequestContext) -> None:
        if any(self.options.word in t for t in _texts(ctx)):
            ctx.decisions.append(Decision(self.name, "block", "test_block.word"))
            raise PolicyViolation(self.name, "word", f"the word {self.options.word!r} is blocked")


class AddSystemPrompt(Policy):
    """Prepends a system message (an async request hook that changes the body)."""

    name = "test-system-prompt"

    async def on_request(self, ctx: RequestContext) -> None:
        ctx.body["messages"].insert(0, {"role": "system", "content": "be governed"})
        ctx.mark_body_changed()


class UpperFilter:
    """Uppercases text and holds back the last `hold` characters until later."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.pending = ""

    def feed(self, text: str) -> str:
        self.pending += text
        if len(self.pending) <= self.hold:
            return ""
        cut = len(self.pending) - self.hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out.upper()

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out.upper()


class Upper(Policy):
    """Uppercases responses: whole bodies and streams (with a hold-back)."""

    name = "test-upper"

    def on_response(self, ctx: RequestContext, body: dict[str, Any]) -> bool:
        for choice in body["choices"]:
            choice["message"]["content"] = choice["message"]["content"].upper()
        return True

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> UpperFilter:
        return UpperFilter(hold=3)


class MaskDigitsFilter:
    def feed(self, text: str) -> str:
        return "".join("#" if c.isdigit() else c for c in text)

    def flush(self) -> str:
        return ""


class MaskDigits(Policy):
    """Replaces digits in streamed text, holding nothing back."""

    name = "test-mask-digits"

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> MaskDigitsFilter:
        return MaskDigitsFilter()


class StopOnWordFilter:
    def feed(self, text: str) -> str:
        if "STOP" in text:
            raise PolicyViolation("test-stream-stop", "stop_word", "stream stopped by policy")
        return text

    def flush(self) -> str:
        return ""


class StreamStop(Policy):
    """Ends a stream with an SSE error event when the text says STOP."""

    name = "test-stream-stop"

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> StopOnWordFilter:
        return StopOnWordFilter()


class Recorder(Policy):
    """Records every finished exchange (what an audit policy will see)."""

    name = "test-recorder"
    seen: ClassVar[list[tuple[int | None, str | None, bool]]] = []

    async def on_complete(self, ctx: RequestContext) -> None:
        Recorder.seen.append((ctx.status, ctx.error_code, ctx.stream))


class Broken(Policy):
    """An on_complete hook that fails: logged, never reaches the client."""

    name = "test-broken"

    def on_complete(self, ctx: RequestContext) -> None:
        raise RuntimeError("bookkeeping failed")


class DecisionRecorder(Policy):
    """Keeps the decisions of every finished exchange (what the audit policy will get)."""

    name = "test-decisions"
    seen: ClassVar[list[list[Decision]]] = []

    def on_complete(self, ctx: RequestContext) -> None:
        DecisionRecorder.seen.append(list(ctx.decisions))


ALL: tuple[type[Policy], ...] = (
    DecisionRecorder,
    BlockWord,
    AddSystemPrompt,
    Upper,
    MaskDigits,
    StreamStop,
    Recorder,
    Broken,
)
