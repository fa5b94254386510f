"""`POST /v1/messages`: Anthropic's Messages API, so the `anthropic` SDK can use the
gateway as its `base_url`.

The request is turned into an OpenAI chat request (`wire/anthropic_native.py`) and
served by the same pipeline as `/v1/chat/completions` — the same consumer groups,
policy chain, routing, stream hold-back and audit records; any target can answer it.
Answers, upstream errors and the gateway's own errors go back in Anthropic's shapes,
streams as Anthropic's event stream (`wire/anthropic_stream.MessageStream`).

The client's key may come as `x-api-key` or as a bearer token (current SDK releases
send either); a gateway key in either names the consumer group, a placeholder
(`any`) means the gateway's upstream key, and any other key is forwarded.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import orjson
from aiohttp import web

from ktproxy.api.chat import Surface, handle
from ktproxy.context import RequestContext
from ktproxy.errors import GatewayError, bad_request
from ktproxy.wire import anthropic_native
from ktproxy.wire.anthropic_stream import MessageStream
from ktproxy.wire.openai import TokenCount


def _to_chat(raw: bytes) -> bytes:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object.")
    try:
        msgspec.convert(body, MessagesHead)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$.")
        raise bad_request(f"Invalid request: {message}", param=where.rstrip("`") or None) from None
    return orjson.dumps(anthropic_native.to_chat_request(body))


class MessagesHead(msgspec.Struct):
    """Top-level Messages fields, type-checked under their Anthropic names (the chat
    request they become is checked again, under its own names)."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    max_tokens: TokenCount
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None


def _from_chat(body: bytes) -> bytes:
    return orjson.dumps(anthropic_native.to_message(orjson.loads(body)))


def _stream(ctx: RequestContext) -> MessageStream:
    return MessageStream(model=ctx.model)


MESSAGES = Surface(
    "messages",
    key_headers=("x-api-key",),
    to_chat=_to_chat,
    from_chat=_from_chat,
    error_from_chat=anthropic_native.anthropic_error_body,
    stream_from_chat=_stream,
)


async def messages(request: web.Request) -> web.StreamResponse:
    """Handle one Messages request, streamed or not."""
    try:
        return await handle(request, MESSAGES)
    except GatewayError as exc:
        error = exc.error_object()
        if exc.param and f"`{exc.param}`" not in exc.message:
            # Anthropic's error shape has no `param`: the message names the field.
            error["message"] = f"{exc.message} (at `{exc.param}`)"
        body = anthropic_native.to_anthropic_error(error, exc.status)
        return web.Response(
            status=exc.status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=exc.headers,
        )
