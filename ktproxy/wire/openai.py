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


class Message(Struct):
    """One chat message; the gateway needs its role, policies its content."""

    role: Annotated[str, Meta(min_length=1)]
    content: Any = None


class ChatRequestHead(Struct):
    """The fields of a chat completion request the gateway itself relies on."""

    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool | None = False


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
