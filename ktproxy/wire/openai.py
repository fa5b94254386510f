"""OpenAI chat wire shapes — only the fields the gateway itself reads.

Requests are validated against these Structs, which ignore every other field; the
original bytes are what goes upstream unless something had to change, so unknown
fields reach the provider untouched. Chunk views are the per-event decode target on
the streaming hot path: msgspec skips the fields they do not name.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

# Bounds the gateway enforces itself, whatever the provider: far above any model's
# real limits (a provider judges those), low enough that a typo or a fuzzer's
# 10**12 is refused here rather than forwarded.
MAX_CHOICES = 128
MAX_TOKENS_BOUND = 10_000_000

Choices = Annotated[int, Meta(ge=1, le=MAX_CHOICES)]
TokenCount = Annotated[int, Meta(ge=1, lt=MAX_TOKENS_BOUND)]


class ContentPart(Struct):
    """One part of a message's content list (`text`, `image_url`, `input_audio`, ...)."""

    type: Annotated[str, Meta(min_length=1)]
    text: str | None = None

    def __post_init__(self) -> None:
        # A text part is its text: policies scan it, adapters translate it.
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs `text`, a string")


class Message(Struct):
    """One chat message; the gateway needs its role, policies its content."""

    role: Annotated[str, Meta(min_length=1)]
    content: str | list[ContentPart] | None = None


class StreamOptions(Struct):
    """`stream_options`: the gateway reads (and may set) `include_usage`."""

    include_usage: bool | None = None


class FunctionDef(Struct):
    """`tools[i].function`: the name the adapters translate."""

    name: Annotated[str, Meta(min_length=1)]


class Tool(Struct):
    """`tools[i]`: a function tool, or another kind the provider judges."""

    type: Annotated[str, Meta(min_length=1)] = "function"
    function: FunctionDef | None = None


class ChatRequestHead(Struct):
    """The fields of a chat completion request the gateway, its policies or its
    provider adapters read. Each is type-checked here, so a wrong type is a 400 naming
    the field (`param`) before anything is forwarded; every other field is not looked
    at and reaches the provider as sent."""

    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Choices | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


class FunctionDeltaView(Struct):
    """`delta.tool_calls[j].function`: the argument fragment."""

    arguments: str | None = None


class ToolCallDeltaView(Struct):
    """`delta.tool_calls[j]` of a chunk."""

    index: int = 0
    function: FunctionDeltaView | None = None


class DeltaView(Struct):
    """`choices[i].delta` of a chunk: only the text the filters look at."""

    content: str | None = None
    tool_calls: list[ToolCallDeltaView] | None = None


class ChoiceView(Struct):
    """`choices[i]` of a chunk."""

    index: int = 0
    delta: DeltaView | None = None
    finish_reason: str | None = None


class ChunkView(Struct):
    """A `chat.completion.chunk` as the stream filters see it."""

    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[ChoiceView] = []
    # The last chunk of a stream asked for with `stream_options.include_usage`.
    usage: dict[str, Any] | None = None


request_head_decoder = msgspec.json.Decoder(ChatRequestHead)
chunk_decoder = msgspec.json.Decoder(ChunkView)
