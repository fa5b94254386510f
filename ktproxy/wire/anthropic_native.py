"""Anthropic Messages ⇄ OpenAI chat, in the direction of the native `/v1/messages`
endpoint: an Anthropic-SDK client talks to the gateway, the policy chain and the
adapters work on an OpenAI-shaped request, and the answer goes back in Anthropic's
format — whole messages and errors here, streams by
`ktproxy.wire.anthropic_stream.MessageStream`.

Anthropic-only request fields that have no OpenAI spelling (`top_k`, `output_config`,
…) are carried on unchanged as extra fields: the `anthropic` adapter
(`ktproxy.wire.anthropic`) sends unknown fields on, so a request that goes out to
Anthropic again loses nothing, and an OpenAI-compatible target answers them with its
own 400. What would be wrong rather
than lost — server tools, images inside tool results, extended thinking, whose
signed blocks an OpenAI-shaped answer cannot carry back — is refused with a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ktproxy.errors import GatewayError, bad_request
from ktproxy.wire.anthropic import SERVER_ERROR_TYPES

# OpenAI's finish_reason -> Anthropic's stop_reason.
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# The Anthropic error type a status stands for (the type Anthropic itself sends with it).
ERROR_TYPES_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_ERROR_TYPES = frozenset(ERROR_TYPES_BY_STATUS.values()) | SERVER_ERROR_TYPES

# Anthropic request fields this module maps; any other is carried on as it came.
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
    }
)


# --- request: Anthropic Messages -> OpenAI chat ------------------------------------------


def to_chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request for a Messages request; `GatewayError` 400 for what an
    OpenAI-shaped request cannot carry. A streamed request asks for the usage chunk,
    because Anthropic streams always end with usage."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise bad_request("`max_tokens` is required and must be a positive integer.", "max_tokens")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        raise bad_request(
            "Extended thinking is not supported through the gateway yet.", param="thinking"
        )
    messages = _system(body.get("system"))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("`messages` must be a non-empty list.", param="messages")
    for i, message in enumerate(raw):
        messages.extend(_message(message, f"messages[{i}]"))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop_sequences")
    if stop:
        out["stop"] = stop
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
    _tool_choice(body.get("tool_choice"), out)
    for name, value in body.items():
        if name not in _MAPPED:
            out[name] = value
    return out


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list):
        parts = [_text_part(block, f"system[{i}]") for i, block in enumerate(system)]
        return [{"role": "system", "content": parts}]
    raise bad_request("`system` must be a string or a list of text blocks.", param="system")


def _text_part(block: Any, where: str) -> dict[str, Any]:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise bad_request("Only text blocks are allowed here.", param=where)
    text = block.get("text", "")
    if not isinstance(text, str):
        raise bad_request("A text block's `text` must be a string.", param=f"{where}.text")
    return _with_cache_control({"type": "text", "text": text}, block)


def _with_cache_control(part: dict[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
    # Carried as the OpenAI-part extension the `anthropic` adapter reads back, so prompt
    # caching survives the trip to an Anthropic target.
    cache = block.get("cache_control")
    if cache is not None:
        part["cache_control"] = cache
    return part


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise bad_request("Each message must be an object.", param=where)
    role = message.get("role")
    content = message.get("content")
    if role == "user":
        return _user(content, where)
    if role == "assistant":
        return [_assistant(content, where)]
    raise bad_request("Message role must be user or assistant.", param=f"{where}.role")


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results first, as OpenAI `tool` messages (they must follow
    the assistant's tool calls), then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise bad_request("Content must be a string or a list of blocks.", param=where)
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            tools.append(_tool_message(block, at))
        elif kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "document":
            parts.append(_document_part(block, at))
        else:
            raise bad_request(f"Content block type `{kind}` is not supported here.", param=at)
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _image_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        assert isinstance(source, dict)
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url":
        assert isinstance(source, dict)
        url = str(source.get("url"))
    else:
        raise bad_request("Images must have a base64 or url source.", param=where)
    return _with_cache_control({"type": "image_url", "image_url": {"url": url}}, block)


def _document_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise bad_request("A document needs a source.", param=where)
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        data = f"data:application/pdf;base64,{source.get('data')}"
        filename = str(block.get("title") or "document.pdf")
        file = {"filename": filename, "file_data": data}
        return _with_cache_control({"type": "file", "file": file}, block)
    if source.get("type") == "text":
        return _with_cache_control({"type": "text", "text": str(source.get("data", ""))}, block)
    raise bad_request("Documents must be base64 PDFs or plain text.", param=where)


def _tool_message(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A tool result as an OpenAI tool message. `is_error` has no OpenAI spelling; the
    result's text (which normally says what went wrong) is kept as it is."""
    content = block.get("content", "")
    if isinstance(content, list):
        content = [_text_part(b, f"{where}.content[{k}]") for k, b in enumerate(content)]
    elif not isinstance(content, str):
        raise bad_request("Tool result content must be a string or text blocks.", param=where)
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": content}


def _assistant(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise bad_request("Content must be a string or a list of blocks.", param=where)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # with thinking off, Anthropic ignores earlier turns' thinking too
        else:
            raise bad_request(
                f"Content block type `{kind}` is not supported here.",
                param=f"{where}.content[{j}]",
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise bad_request("`tools` must be a list.", param="tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad_request(
                f"Server tool `{kind}` is not supported through the gateway.",
                param=f"tools[{i}]",
            )
        function: dict[str, Any] = {"name": tool.get("name")}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object"}
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        tools.append(_with_cache_control({"type": "function", "function": function}, tool))
    return tools


def _tool_choice(raw: Any, out: dict[str, Any]) -> None:
    if raw is None:
        return
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(raw.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": raw["name"]}}
    else:
        raise bad_request("`tool_choice` must be auto, any, tool or none.", param="tool_choice")
    if raw.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


# --- response: OpenAI chat.completion -> Anthropic message --------------------------------


def usage_to_anthropic(usage: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic usage (cached prompt tokens counted apart)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens")
    prompt = prompt if isinstance(prompt, int) else 0
    output = usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) else 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": output if isinstance(output, int) else 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def stop_reason(finish: Any) -> str:
    """Anthropic's stop_reason for OpenAI's finish_reason (unknown ones: end_turn)."""
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as a `tool_use` input; 502 when they are not a JSON
    object (an Anthropic client could not be given them)."""
    try:
        parsed = orjson.loads(arguments or "{}") if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise GatewayError(
            502,
            "Upstream returned tool call arguments that are not a JSON object.",
            type="upstream_error",
            code="upstream_bad_response",
        )
    return parsed


def to_message(completion: Mapping[str, Any]) -> dict[str, Any]:
    """The Anthropic message for an OpenAI chat.completion (its first choice)."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):  # content parts, as some compatible servers send
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    reason = "refusal" if refusal else stop_reason(choice.get("finish_reason"))
    return {
        "id": completion.get("id"),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": usage_to_anthropic(completion.get("usage")),
    }


# --- errors -------------------------------------------------------------------------------


def anthropic_error_type(error: Mapping[str, Any], status: int | None = None) -> str:
    """The Anthropic error type for an OpenAI error object: the exact one when the error
    came from Anthropic (its `code`), else the one Anthropic sends with `status`, else
    one read from the OpenAI `type` (errors inside a stream have no status)."""
    code = error.get("code")
    if isinstance(code, str) and code in ANTHROPIC_ERROR_TYPES:
        return code
    if status is not None:
        return ERROR_TYPES_BY_STATUS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
    kind = error.get("type")
    if kind in ("server_error", "upstream_error"):
        return "api_error"
    if kind in ("requests", "tokens", "rate_limit_error") or code == "rate_limit_exceeded":
        return "rate_limit_error"
    return "invalid_request_error"


def to_anthropic_error(error: Mapping[str, Any], status: int | None = None) -> dict[str, Any]:
    """An OpenAI error object (the value of `error`) in Anthropic's error shape. The
    gateway's `code` (and a blocking policy's name) stay in the error object, as extra
    keys Anthropic's SDK keeps."""
    inner: dict[str, Any] = {
        "type": anthropic_error_type(error, status),
        "message": str(error.get("message") or "error"),
    }
    code = error.get("code")
    if isinstance(code, str) and code != inner["type"]:
        inner["code"] = code
    if isinstance(error.get("policy"), str):
        inner["policy"] = error["policy"]
    return {"type": "error", "error": inner}


def anthropic_error_body(status: int, body: bytes) -> bytes:
    """An OpenAI error response body as an Anthropic error body."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        error = {"message": body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"}
    return orjson.dumps(to_anthropic_error(error, status))
