"""OpenAI chat ⇄ Anthropic Messages, in the direction the `anthropic` adapter needs.

The gateway speaks OpenAI's chat format everywhere; a target whose provider is
Anthropic gets the request rewritten into a Messages request here, and its answer —
a whole message or an error — rewritten back into OpenAI's
format, so that policies and clients see what any other adapter returns.

What has no faithful spelling on the other side is refused with a 400 naming the
field (`n > 1`, a schema-less JSON `response_format`, logprobs, penalties, …) rather
than dropped and answered as if it had been honoured; a JSON-schema `response_format`
is Anthropic's structured output (`output_config.format`), so the SDK's `parse()`
works. Fields this module does not know at all are
sent on unchanged: that is how a client reaches Anthropic-only options (`top_k`,
`thinking`, …) through the OpenAI SDK's `extra_body`, and an unknown field the
Messages API does not accept comes back as its own clear 400.

Streams are translated by `ktproxy.wire.anthropic_stream.ChunkStream`; the opposite
direction, for the gateway's native `/v1/messages` endpoint, is
`ktproxy.wire.anthropic_native` (and `MessageStream` for its streams).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from ktproxy.errors import GatewayError, bad_request

# Anthropic's stop_reason -> OpenAI's finish_reason.
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Media types the Messages API accepts in a base64 image source.
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Anthropic error types whose OpenAI `type` is "server_error" (OpenAI's type for 5xx);
# the others are the client's fault. The Anthropic type itself becomes the `code`, so
# the native endpoint can give the exact type back (`anthropic_native`).
SERVER_ERROR_TYPES = frozenset({"api_error", "overloaded_error", "timeout_error"})

_DATA_URL = re.compile(r"data:([\w.+/-]+);base64,(.*)", re.DOTALL)

# OpenAI request fields the translation consumes (mapped or deliberately unused).
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "user",
        "safety_identifier",
        "response_format",
        "reasoning_effort",
        "output_config",
    }
)
# OpenAI fields with no bearing on what Anthropic generates: accepted and not sent.
# (`stream_options` is read by the stream translator; `metadata`, `store` and the
# prompt-cache keys are about OpenAI's own storage and caching; `seed` is best effort
# even at OpenAI; `service_tier` names OpenAI's tiers.)
_IGNORED = frozenset(
    {
        "stream_options",
        "store",
        "metadata",
        "seed",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)


# OpenAI fields that change the answer and that the Messages API cannot honour: allowed
# absent or at a value meaning "off" (listed), else a 400.
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "modalities": (["text"],),
    "audio": (),
    "prediction": (),
    "functions": (),
    "function_call": (),
    "web_search_options": (),
    "verbosity": (),
}
_UNSUPPORTED_HINTS = {
    "n": "ask for one choice per request",
    "functions": "use `tools`",
    "function_call": "use `tool_choice`",
}


# --- request: OpenAI chat -> Anthropic Messages ----------------------------------------


def _default_or_absent(value: Any, defaults: tuple[Any, ...]) -> bool:
    # The type check keeps `True` from passing for `1` (and `False` for `0`).
    return value is None or any(value == d and type(value) is type(d) for d in defaults)


def to_messages_request(body: Mapping[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """The Messages request for an OpenAI chat request; `GatewayError` 400 for what
    cannot be expressed. `default_max_tokens` fills Anthropic's required `max_tokens`."""
    for name, defaults in _UNSUPPORTED.items():
        value = body.get(name)
        if not _default_or_absent(value, defaults):
            hint = _UNSUPPORTED_HINTS.get(name)
            raise bad_request(
                f"`{name}` is not supported for Anthropic models" + (f"; {hint}." if hint else "."),
                param=name,
                code="unsupported_parameter",
            )
    system, messages = _messages(body.get("messages"))
    if not messages:
        raise bad_request(
            "Anthropic models need at least one user or assistant message.", param="messages"
        )
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if system:
        plain = len(system) == 1 and "cache_control" not in system[0]
        out["system"] = system[0]["text"] if plain else system
    out["max_tokens"] = _max_tokens(body, default_max_tokens)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    elif stop is not None and stop != []:
        raise bad_request("`stop` must be a string or a list of strings.", param="stop")
    if body.get("stream") is True:
        out["stream"] = True
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"), bool(tools), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    output = _output_config(body)
    if output:
        out["output_config"] = output
    for name, value in body.items():
        if name not in _MAPPED and name not in _IGNORED and name not in _UNSUPPORTED:
            out[name] = value  # Anthropic-only options (top_k, thinking, …) go on as sent
    return out


def include_usage(body: Mapping[str, Any]) -> bool:
    """Whether the OpenAI request asked for the final usage chunk of a stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _max_tokens(body: Mapping[str, Any], default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad_request(f"`{name}` must be a positive integer.", param=name)
        return value
    return default


def _messages(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system text blocks, Anthropic turns): system and developer messages, wherever
    they stand, go to `system` (the Messages API has no other place for them);
    consecutive turns of one role are merged into one."""
    if not isinstance(raw, list):
        raise bad_request("`messages` must be a list.", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request("Each message must be an object.", param=where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_text_blocks(content, f"{where}.content"))
            continue
        if role == "user":
            turn: dict[str, Any] | None = {"role": "user", "content": _user_content(content, where)}
        elif role == "assistant":
            turn = _assistant_turn(message, where)
        elif role == "tool":
            turn = {"role": "user", "content": [_tool_result(message, where)]}
        else:
            raise bad_request(
                f"Message role `{role}` is not supported for Anthropic models.",
                param=f"{where}.role",
            )
        if turn is None:
            continue
        if turns and turns[-1]["role"] == turn["role"]:
            last = turns[-1]
            last["content"] = _as_blocks(last["content"]) + _as_blocks(turn["content"])
        else:
            turns.append(turn)
    return system, turns


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _with_cache_control(block: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    # `cache_control` on an OpenAI part is a common extension for Anthropic's prompt
    # caching; it is carried to the block it describes.
    cache = part.get("cache_control")
    if cache is not None:
        block["cache_control"] = cache
    return block


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Text-only content (system, tool results) as text blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request("Content must be a string or a list of text parts.", param=where)
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise bad_request("Only text parts are allowed here.", param=f"{where}[{j}]")
        blocks.append(_with_cache_control({"type": "text", "text": part.get("text", "")}, part))
    return blocks


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("User content must be a string or a list of parts.", param=where)
    return [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _user_part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return _with_cache_control({"type": "text", "text": part.get("text", "")}, part)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise bad_request("`image_url.url` must be a string.", param=where)
        return _with_cache_control({"type": "image", "source": _image_source(url, where)}, part)
    if kind == "file":
        return _with_cache_control(_document(part.get("file"), where), part)
    raise bad_request(
        f"Content part type `{kind}` is not supported for Anthropic models.", param=where
    )


def _image_source(url: str, where: str) -> dict[str, Any]:
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    found = _DATA_URL.fullmatch(url)
    if found is None:
        raise bad_request(
            "Images must be http(s) URLs or base64 data URLs (data:image/png;base64,...).",
            param=where,
        )
    media_type, data = found.groups()
    if media_type not in IMAGE_MEDIA_TYPES:
        raise bad_request(
            f"Image type `{media_type}` is not supported; use one of "
            + ", ".join(sorted(IMAGE_MEDIA_TYPES))
            + ".",
            param=where,
        )
    return {"type": "base64", "media_type": media_type, "data": data}


def _document(file: Any, where: str) -> dict[str, Any]:
    """An OpenAI `file` part holding an inline PDF, as a document block."""
    data = file.get("file_data") if isinstance(file, dict) else None
    found = _DATA_URL.fullmatch(data) if isinstance(data, str) else None
    if found is None or found.group(1) != "application/pdf":
        raise bad_request(
            "Only inline PDF files (file_data: data:application/pdf;base64,...) are "
            "supported for Anthropic models; uploaded file ids are not.",
            param=where,
        )
    source = {"type": "base64", "media_type": "application/pdf", "data": found.group(2)}
    return {"type": "document", "source": source}


def _assistant_turn(message: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """An assistant turn; None when it says nothing (the Messages API rejects empty
    turns, and an empty turn carries nothing to lose)."""
    if message.get("function_call") is not None:
        raise bad_request(
            "Legacy `function_call` messages are not supported; use `tool_calls`.",
            param=f"{where}.function_call",
        )
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "refusal"):
                raise bad_request(
                    "Assistant content parts must be text or refusal.",
                    param=f"{where}.content[{j}]",
                )
            text = part.get(kind) or ""
            if text:
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
    elif content is not None:
        raise bad_request("Assistant content must be a string or a list.", param=where)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request("`tool_calls` must be a list.", param=f"{where}.tool_calls")
    for j, call in enumerate(calls):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
    if not blocks:
        return None
    if len(blocks) == 1 and isinstance(content, str) and not calls:
        return {"role": "assistant", "content": content}
    return {"role": "assistant", "content": blocks}


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not call.get("id"):
        raise bad_request("A tool call needs an `id` and a `function.name`.", param=where)
    arguments = fn.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise bad_request(
            "Tool call arguments must be a JSON object for Anthropic models.",
            param=f"{where}.function.arguments",
        )
    return {"type": "tool_use", "id": call["id"], "name": fn["name"], "input": parsed}


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request("A tool message needs a `tool_call_id`.", param=f"{where}.tool_call_id")
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if isinstance(content, str):
        block["content"] = content
    elif content is not None:
        block["content"] = _text_blocks(content, f"{where}.content")
    return block


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("`tools` must be a list.", param="tools")
    tools = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            raise bad_request(
                "Only function tools with a name are supported for Anthropic models.",
                param=f"tools[{i}]",
            )
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        out: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            out["description"] = fn["description"]
        out["input_schema"] = schema
        if isinstance(fn.get("strict"), bool):
            out["strict"] = fn["strict"]
        tools.append(_with_cache_control(out, tool))
    return tools


def _tool_choice(raw: Any, has_tools: bool, parallel: Any) -> dict[str, Any] | None:
    choice: dict[str, Any] | None
    if raw is None:
        choice = None  # Anthropic's default is auto, as OpenAI's is with tools
    elif raw in ("auto", "none"):
        choice = {"type": raw}
    elif raw == "required":
        choice = {"type": "any"}
    elif (
        isinstance(raw, dict)
        and raw.get("type") == "function"
        and isinstance(raw.get("function"), dict)
        and isinstance(raw["function"].get("name"), str)
    ):
        choice = {"type": "tool", "name": raw["function"]["name"]}
    else:
        raise bad_request(
            "`tool_choice` must be auto, none, required or a function.", param="tool_choice"
        )
    if not has_tools:
        if choice is not None and choice["type"] in ("any", "tool"):
            raise bad_request("`tool_choice` requires `tools`.", param="tool_choice")
        return None
    if parallel is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return choice


# OpenAI reasoning efforts Anthropic's `output_config.effort` has under the same name.
EFFORTS = frozenset({"low", "medium", "high", "xhigh"})


def _output_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's `output_config` from `response_format` (a JSON schema: structured
    output) and `reasoning_effort`, over one the client sent as such (extra_body)."""
    sent = body.get("output_config")
    config: dict[str, Any] = dict(sent) if isinstance(sent, dict) else {}
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict) or fmt.get("type") != "json_schema":
            raise bad_request(
                "Anthropic models take `response_format` only as a JSON schema "
                "(type json_schema with json_schema.schema); there is no schema-less JSON mode.",
                param="response_format",
                code="unsupported_parameter",
            )
        config["format"] = {"type": "json_schema", "schema": schema}
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise bad_request(
                f"`reasoning_effort` must be one of {', '.join(sorted(EFFORTS))} "
                "for Anthropic models.",
                param="reasoning_effort",
                code="unsupported_parameter",
            )
        config["effort"] = effort
    return config


# --- response: Anthropic message -> OpenAI chat.completion ------------------------------


def usage_to_openai(usage: Any) -> dict[str, Any]:
    """Anthropic usage as OpenAI usage. Anthropic counts cached prompt tokens apart from
    `input_tokens`; OpenAI's `prompt_tokens` includes them (the cache reads are also
    reported as `cached_tokens`)."""
    usage = usage if isinstance(usage, dict) else {}

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) else 0

    cached = count("cache_read_input_tokens")
    prompt = count("input_tokens") + count("cache_creation_input_tokens") + cached
    completion = count("output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's finish_reason for Anthropic's stop_reason (unknown ones: "stop")."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def to_chat_completion(message: Mapping[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """The OpenAI `chat.completion` for an Anthropic message.

    Text blocks are joined into `content`; `tool_use` blocks become `tool_calls`
    (arguments as a JSON string); `thinking` text goes to `reasoning_content`, the
    field OpenAI-compatible servers use for it. Server-tool and redacted-thinking
    blocks have no OpenAI spelling and are left out.
    """
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking", "")))
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        msg["tool_calls"] = calls
    if thoughts:
        msg["reasoning_content"] = "".join(thoughts)
    choice = {
        "index": 0,
        "message": msg,
        "logprobs": None,
        "finish_reason": finish_reason(message.get("stop_reason")),
    }
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model"),
        "choices": [choice],
        "usage": usage_to_openai(message.get("usage")),
    }


def chat_completion_body(data: bytes) -> bytes:
    """A 200 Messages response body as an OpenAI chat.completion body (502 if it is
    not a message)."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        message = None
    if not isinstance(message, dict) or message.get("type") != "message":
        raise GatewayError(
            502,
            "Upstream returned a body that is not an Anthropic message.",
            type="upstream_error",
            code="upstream_bad_response",
        )
    return orjson.dumps(to_chat_completion(message))


# --- errors ------------------------------------------------------------------------------


def openai_error_object(error: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic error object (`{"type", "message"}`) as OpenAI's error object."""
    kind = error.get("type")
    kind = kind if isinstance(kind, str) and kind else "api_error"
    if kind in SERVER_ERROR_TYPES:
        openai_type = "server_error"
    elif kind == "rate_limit_error":
        openai_type = "rate_limit_error"
    else:
        openai_type = "invalid_request_error"
    return {
        "message": str(error.get("message") or kind),
        "type": openai_type,
        "param": None,
        "code": kind,
    }


def openai_error_body(status: int, body: bytes) -> bytes:
    """An Anthropic error response body as an OpenAI error body; a body that is not
    Anthropic's error JSON (a proxy's HTML page) becomes the gateway's upstream error."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        return orjson.dumps({"error": openai_error_object(obj["error"])})
    text = body[:200].decode("utf-8", "replace").strip()
    return GatewayError(
        status,
        f"Upstream returned HTTP {status}" + (f": {text}" if text else "."),
        type="upstream_error",
        code=f"upstream_http_{status}",
    ).body()
