"""Gemini's answers translated into OpenAI's: whole responses and error bodies.

A `GenerateContentResponse` becomes a `chat.completion` (candidates are choices,
`functionCall` parts are tool calls, `usageMetadata` is usage); a Google error body
(`{"error": {"code", "message", "status", "details"}}`) becomes OpenAI's error
object under the same HTTP status. The pieces a whole response and a stream share
(finish reasons, usage, tool calls, a blocked prompt) live here too;
`ktproxy.wire.gemini_stream` uses them.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ktproxy.errors import GatewayError

Json = dict[str, Any]

_SAFETY_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def new_tool_call_id() -> str:
    """An OpenAI-style id for a call Gemini returned without one."""
    return f"call_{uuid.uuid4().hex[:24]}"


def completion_id(response: Mapping[str, Any]) -> str:
    """`chatcmpl-` + Gemini's response id (a fresh one when it sent none)."""
    rid = response.get("responseId")
    return f"chatcmpl-{rid if isinstance(rid, str) and rid else uuid.uuid4().hex}"


def finish_reason(reason: Any, has_calls: bool) -> str:
    """OpenAI's `finish_reason` for a candidate's `finishReason`."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _SAFETY_FINISH:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def usage(meta: Any) -> Json:
    """OpenAI `usage` from `usageMetadata`: thoughts are completion tokens (as OpenAI
    counts reasoning), tool-use prompts are prompt tokens."""
    meta = meta if isinstance(meta, Mapping) else {}

    def count(key: str) -> int:
        value = meta.get(key)
        return value if isinstance(value, int) else 0

    prompt = count("promptTokenCount") + count("toolUsePromptTokenCount")
    thoughts = count("thoughtsTokenCount")
    completion = count("candidatesTokenCount") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": count("totalTokenCount") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": count("cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def candidate_parts(candidate: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The parts of a candidate's content (none when a filter removed it)."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return [p for p in parts if isinstance(p, Mapping)] if isinstance(parts, list) else []


def candidate_index(candidate: Mapping[str, Any]) -> int:
    """A candidate's index; proto3 JSON leaves a zero out, so a missing one is 0."""
    index = candidate.get("index")
    return index if isinstance(index, int) else 0


def part_text(part: Mapping[str, Any]) -> str | None:
    """A part's answer text; thought summaries are not part of the answer."""
    text = part.get("text")
    return text if isinstance(text, str) and not part.get("thought") else None


def tool_call(part: Mapping[str, Any], new_id: Callable[[], str]) -> Json | None:
    """An OpenAI tool call for a `functionCall` part. A thought signature travels in
    `extra_content.google` (as in Google's own OpenAI-compatible API), which the
    OpenAI SDK keeps on the message, so a replayed call carries it back."""
    call = part.get("functionCall")
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
        return None
    cid = call.get("id")
    out: Json = {
        "id": cid if isinstance(cid, str) and cid else new_id(),
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        out["extra_content"] = {"google": {"thought_signature": signature}}
    return out


def prompt_blocked(response: Mapping[str, Any]) -> GatewayError | None:
    """The client's error for a prompt Gemini refused to answer (no candidates and a
    `promptFeedback.blockReason`); like OpenAI refusing a prompt, a 400."""
    feedback = response.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, Mapping) else None
    if not reason or response.get("candidates"):
        return None
    assert isinstance(feedback, Mapping)
    detail = feedback.get("blockReasonMessage")
    message = f"The provider's content filter blocked the prompt ({reason})"
    message += f": {detail}" if isinstance(detail, str) and detail else "."
    return GatewayError(
        400, message, type="invalid_request_error", code="content_filter", param="messages"
    )


def bad_response(reason: str) -> GatewayError:
    """502: the upstream answered 200 with something that is not Gemini's format."""
    return GatewayError(
        502, f"Upstream returned {reason}.", type="upstream_error", code="upstream_bad_response"
    )


def completion(
    body: bytes,
    model: str,
    *,
    created: int | None = None,
    new_id: Callable[[], str] = new_tool_call_id,
) -> bytes:
    """An OpenAI `chat.completion` body for a Gemini `GenerateContentResponse` body."""
    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_response("a body that is not JSON") from None
    if not isinstance(response, dict):
        raise bad_response("a body that is not a GenerateContentResponse")
    blocked = prompt_blocked(response)
    if blocked is not None:
        raise blocked
    choices: list[Json] = []
    candidates = response.get("candidates") or []
    for candidate in candidates:
        if not isinstance(candidate, Mapping):
            continue
        parts = candidate_parts(candidate)
        texts = [t for p in parts if (t := part_text(p)) is not None]
        calls = [c for p in parts if (c := tool_call(p, new_id)) is not None]
        message: Json = {
            "role": "assistant",
            "content": "".join(texts) if texts else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": candidate_index(candidate),
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
            }
        )
    choices.sort(key=lambda c: c["index"])
    version = response.get("modelVersion")
    out = {
        "id": completion_id(response),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": version if isinstance(version, str) and version else model,
        "choices": choices,
        "usage": usage(response.get("usageMetadata")),
    }
    return orjson.dumps(out)


def google_error(body: bytes) -> Mapping[str, Any] | None:
    """The `error` object of a Google error body (also in a one-element list, as the
    streaming method sends it)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, list) and obj:
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    return err if isinstance(err, Mapping) else None


def error_object(status: int, err: Mapping[str, Any] | None, raw: bytes = b"") -> Json:
    """An OpenAI `error` object for Google's: its message, and as code the machine
    reason (`ErrorInfo.reason`, else the canonical status), lower-cased."""
    message = err.get("message") if err is not None else None
    if not isinstance(message, str) or not message:
        text = raw[:200].decode("utf-8", "replace").strip()
        message = f"Upstream returned HTTP {status}" + (f": {text}" if text else ".")
    code: Any = None
    if err is not None:
        for detail in err.get("details") or []:
            if isinstance(detail, Mapping) and isinstance(detail.get("reason"), str):
                code = detail["reason"]
                break
        code = code or err.get("status")
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "upstream_error")
    return {
        "message": message,
        "type": kind,
        "param": None,
        "code": code.lower() if isinstance(code, str) else f"upstream_http_{status}",
    }


def error_body(status: int, body: bytes) -> bytes:
    """The OpenAI error body for a Google error response (the HTTP status is kept)."""
    return orjson.dumps({"error": error_object(status, google_error(body), body)})


def retry_after(body: bytes) -> str | None:
    """Whole seconds from a Google error's `RetryInfo.retryDelay` (`"37s"`, `"0.5s"`):
    Google says when to retry in the body, where OpenAI clients look for a header."""
    err = google_error(body)
    for detail in (err.get("details") if err is not None else None) or []:
        delay = detail.get("retryDelay") if isinstance(detail, Mapping) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                continue
            if math.isfinite(seconds) and seconds >= 0:
                return str(max(1, math.ceil(seconds)))
    return None
