"""A fake Gemini upstream for the gateway's tests: the Gemini API and Vertex AI shapes.

Why it exists: the `google-vertex` adapter must be tested against something that speaks
Google's *real* wire format — `generateContent` JSON, `streamGenerateContent?alt=sse` events
with CRLF framing, proto3 JSON that leaves out a zero `index`, whole function calls with
thought signatures, safety blocks, Google's error JSON with `RetryInfo` — and that refuses a
request the way Google does (an unknown field is a 400 "Cannot find field", a function
declaration whose OBJECT has no properties is a 400, a role other than user/model is a 400).
It records every request, so tests can assert what left the gateway (no PII, the right URL,
the right credential header).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import HostileWriter, ScriptedServer, pieces

_GEMINI_PATH = re.compile(
    r"^(?P<prefix>.*?)/v1beta/models/(?P<model>[^/:]+):"
    r"(?P<method>generateContent|streamGenerateContent)$"
)
_VERTEX_PATH = re.compile(
    r"^(?P<prefix>.*?)/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):"
    r"(?P<method>generateContent|streamGenerateContent)$"
)
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: Default streamed-text piece sizes (characters, cycled).
DEFAULT_SPLIT: tuple[int, ...] = (3, 1, 6, 2, 9)

# What Google's request parser knows; anything else is "Cannot find field".
_REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
}
_CONTENT_FIELDS = {"role", "parts"}
_DATA_FIELDS = {
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
}
_PART_FIELDS = _DATA_FIELDS | {"thought", "thoughtSignature", "videoMetadata"}
_GENERATION_FIELDS = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
}
_SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_TOOL_FIELDS = {"functionDeclarations", "googleSearch", "codeExecution", "urlContext"}
_DECLARATION_FIELDS = {"name", "description", "parameters", "parametersJsonSchema", "response"}
_MODES = {"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"}


class GoogleError(Exception):
    """A request the fake refuses, as Google would (status, message, canonical status)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def google_error(
    code: int, message: str, *, status: str | None = None, details: Sequence[Any] = ()
) -> dict[str, Any]:
    """Google's error JSON: `{"error": {"code", "message", "status", "details"?}}`."""
    err: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": status or STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if details:
        err["details"] = list(details)
    return {"error": err}


@dataclass
class GeminiCall:
    """One request as the fake saw it."""

    api: str  # "gemini", "vertex", or "" when the path matched neither
    method: str  # generateContent | streamGenerateContent
    model: str
    project: str | None
    location: str | None
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # parsed body, None when it is not JSON


@dataclass
class GeminiReply:
    """A scripted answer to the next request.

    - ``text`` None and no ``function_calls``: ``"Echo: <last user text>"``.
    - ``candidates``: one text per candidate (otherwise ``candidateCount`` copies of the text).
    - ``function_calls``: ``(name, args)`` parts, all in one event when streamed; ``call_ids``
      gives them ids; ``thought_signature`` goes on the first one.
    - ``finish_reason``: e.g. ``SAFETY`` (then an empty text means no content at all).
    - ``block_reason``: the prompt is blocked (200, ``promptFeedback``, no candidates).
    - ``status != 200``: Google's error JSON (``message``, ``reason`` as ErrorInfo,
      ``retry_delay`` as RetryInfo), or ``raw_error`` bytes as they are.
    - Streams: ``split`` (text piece sizes), ``tcp_split`` (events cut at awkward bytes and
      coalesced), ``crlf`` (Google frames events with CRLF), ``usage_each_event`` (the Gemini
      API sends cumulative usage on every event, Vertex on the last), ``error_after_events``
      (an error event mid-stream), ``close_after_events`` (the connection drops).
    """

    text: str | None = None
    candidates: list[str] | None = None
    function_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    call_ids: bool = False
    thought_signature: str | None = None
    finish_reason: str = "STOP"
    block_reason: str | None = None
    status: int = 200
    message: str | None = None
    reason: str | None = None
    retry_delay: str | None = None
    raw_error: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict[str, int] | None = None
    split: list[int] | None = None
    tcp_split: bool = True
    crlf: bool = True
    usage_each_event: bool = True
    error_after_events: int | None = None
    close_after_events: int | None = None


def _cut_twice(count: int, length: int) -> list[int]:
    """Every written event cut at an arbitrary byte and between its final CR and LF."""
    return sorted({1 + (count * 7919) % (length - 1), length - 1}) if length > 1 else []


class FakeGeminiUpstream(ScriptedServer[GeminiReply]):
    """An in-process Gemini API / Vertex AI server with scripted, recorded behaviour."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host, client_max_size=64 * 1024 * 1024)
        self.requests: list[GeminiCall] = []
        # When set, only these credentials are accepted (API keys or bearer tokens).
        self.keys: set[str] | None = None

    def reset(self) -> None:
        super().reset()
        self.keys = None

    # --- request handling -------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any | None = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        match = _GEMINI_PATH.match(request.path)
        api = "gemini"
        if match is None:
            match, api = _VERTEX_PATH.match(request.path), "vertex"
        groups = match.groupdict() if match else {}
        self.requests.append(
            GeminiCall(
                api=api if match else "",
                method=groups.get("method", ""),
                model=groups.get("model", ""),
                project=groups.get("project"),
                location=groups.get("location"),
                path=request.path,
                query=request.query_string,
                headers=headers,
                body=body,
                json=parsed,
            )
        )
        if match is None or request.method != "POST":
            msg = f"The requested URL {request.path} was not found on this server."
            return _json(404, google_error(404, msg))
        refusal = self._check_auth(api, headers, request.query.get("key"))
        if refusal is not None:
            return refusal
        reply = self._queue.popleft() if self._queue else GeminiReply()
        if reply.status != 200:
            return _json(reply.status, self._error(reply), reply.headers, raw=reply.raw_error)
        try:
            payload = _validate(parsed)
        except GoogleError as exc:
            return _json(exc.code, google_error(exc.code, exc.message))
        model = groups["model"]
        if groups["method"] == "generateContent":
            return _json(200, _whole(reply, payload, model), reply.headers)
        events = list(_events(reply, payload, model))
        if request.query.get("alt") != "sse":
            # Without alt=sse Google streams one JSON array; the adapter must not rely on it.
            return _json(200, events, reply.headers)
        return await self._stream(request, reply, events)

    def _check_auth(
        self, api: str, headers: dict[str, str], query_key: str | None
    ) -> web.Response | None:
        if api == "gemini":
            key = headers.get("x-goog-api-key") or query_key
            if not key:
                msg = (
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to "
                    "call this API."
                )
                return _json(403, google_error(403, msg))
            if self.keys is not None and key not in self.keys:
                details = [_error_info("API_KEY_INVALID")]
                msg = "API key not valid. Please pass a valid API key."
                return _json(400, google_error(400, msg, details=details))
            return None
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not token or (self.keys is not None and token not in self.keys):
            msg = (
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential."
            )
            return _json(401, google_error(401, msg, details=[_error_info("ACCESS_TOKEN_TYPE")]))
        return None

    @staticmethod
    def _error(reply: GeminiReply) -> dict[str, Any]:
        details = []
        if reply.reason:
            details.append(_error_info(reply.reason))
        if reply.retry_delay:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": reply.retry_delay,
                }
            )
        message = reply.message or f"Fake Gemini error {reply.status}"
        return google_error(reply.status, message, details=details)

    async def _stream(
        self, request: web.Request, reply: GeminiReply, events: list[dict[str, Any]]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=reply.headers)
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        await resp.prepare(request)
        writer = HostileWriter(resp, reply.tcp_split, _cut_twice)
        end = b"\r\n\r\n" if reply.crlf else b"\n\n"
        for count, event in enumerate(events, 1):
            await writer.send(b"data: " + _dumps(event) + end)
            if reply.error_after_events == count:
                err = google_error(500, "An internal error has occurred. Please retry.")
                await writer.send(b"data: " + _dumps(err) + end)
                await writer.flush()
                await resp.write_eof()
                return resp
            if reply.close_after_events == count:
                await writer.flush()
                if request.transport is not None:
                    request.transport.close()
                return resp
        await writer.flush()
        await resp.write_eof()
        return resp


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
    }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _json(
    status: int, obj: Any, headers: dict[str, str] | None = None, *, raw: bytes | None = None
) -> web.Response:
    body = raw if raw is not None else json.dumps(obj, ensure_ascii=False, indent=2).encode()
    return web.Response(
        status=status, body=body, headers=headers or {}, content_type="application/json"
    )


# --- what Google accepts ------------------------------------------------------------------


def _unknown(obj: dict[str, Any], known: set[str], where: str) -> None:
    for key in obj:
        if key not in known:
            raise GoogleError(
                400,
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field.",
            )


def _validate(payload: Any) -> dict[str, Any]:
    """The request if Google would accept it; `GoogleError` with Google's message if not."""
    if not isinstance(payload, dict):
        raise GoogleError(400, "Invalid JSON payload received. Expected an object.")
    _unknown(payload, _REQUEST_FIELDS, "")
    contents = payload.get("contents")
    if not contents:
        raise GoogleError(400, "* GenerateContentRequest.contents: contents is not specified\n")
    for i, content in enumerate(contents):
        _content(content, f"contents[{i}]", roles={"user", "model"})
    if "systemInstruction" in payload:
        _content(payload["systemInstruction"], "system_instruction", roles=None)
    for i, tool in enumerate(payload.get("tools") or []):
        _unknown(tool, _TOOL_FIELDS, f"tools[{i}]")
        for j, decl in enumerate(tool.get("functionDeclarations") or []):
            where = f"tools[{i}].function_declarations[{j}]"
            _unknown(decl, _DECLARATION_FIELDS, where)
            if "parameters" in decl:
                _schema(decl["parameters"], f"{where}.parameters", function=True)
    config = payload.get("toolConfig")
    if config is not None:
        _unknown(config, {"functionCallingConfig"}, "tool_config")
        fcc = config.get("functionCallingConfig") or {}
        _unknown(fcc, {"mode", "allowedFunctionNames"}, "tool_config.function_calling_config")
        if fcc.get("mode") not in _MODES:
            raise GoogleError(400, "Invalid value at 'tool_config.function_calling_config.mode'")
    generation = payload.get("generationConfig")
    if generation is not None:
        _unknown(generation, _GENERATION_FIELDS, "generation_config")
        if "responseSchema" in generation:
            _schema(generation["responseSchema"], "generation_config.response_schema")
    return payload


def _content(content: Any, where: str, roles: set[str] | None) -> None:
    if not isinstance(content, dict):
        raise GoogleError(400, f"Invalid value at '{where}': expected an object")
    _unknown(content, _CONTENT_FIELDS, where)
    if roles is not None and content.get("role", "user") not in roles:
        raise GoogleError(400, "Please use a valid role: user, model.")
    parts = content.get("parts")
    if not parts:
        raise GoogleError(
            400, f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n"
        )
    for k, part in enumerate(parts):
        pwhere = f"{where}.parts[{k}]"
        _unknown(part, _PART_FIELDS, pwhere)
        data = [key for key in part if key in _DATA_FIELDS]
        if len(data) != 1:
            raise GoogleError(
                400,
                f"* GenerateContentRequest.{pwhere}.data: required oneof field 'data' "
                "must have one initialized field\n",
            )
        if "text" in part and not isinstance(part["text"], str):
            raise GoogleError(400, f"Invalid value at '{pwhere}.text'")
        call = part.get("functionCall")
        if call is not None and not isinstance(call.get("args", {}), dict):
            raise GoogleError(400, f"Invalid value at '{pwhere}.function_call.args'")
        response = part.get("functionResponse")
        if response is not None and not (
            isinstance(response.get("response"), dict) and response.get("name")
        ):
            raise GoogleError(400, f"Invalid value at '{pwhere}.function_response'")
        inline = part.get("inlineData")
        if inline is not None:
            _unknown(inline, {"mimeType", "data"}, f"{pwhere}.inline_data")
            try:
                base64.b64decode(inline.get("data", ""), validate=True)
            except (binascii.Error, ValueError):
                raise GoogleError(400, f"Invalid value at '{pwhere}.inline_data.data'") from None
            if not inline.get("mimeType"):
                raise GoogleError(
                    400,
                    f"* GenerateContentRequest.{pwhere}.inline_data.mime_type: "
                    "a mime type is required\n",
                )


def _schema(schema: Any, where: str, *, function: bool = False) -> None:
    if not isinstance(schema, dict):
        raise GoogleError(400, f"Invalid value at '{where}'")
    _unknown(schema, _SCHEMA_FIELDS, where)
    kind = schema.get("type")
    if kind is not None and kind not in _TYPES:
        raise GoogleError(
            400,
            f"Invalid value at '{where}.type' "
            f'(type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "{kind}"',
        )
    enum = schema.get("enum")
    if enum is not None and not all(isinstance(v, str) for v in enum):
        raise GoogleError(400, f"Invalid value at '{where}.enum'")
    props = schema.get("properties")
    if function and kind == "OBJECT" and not props:
        raise GoogleError(
            400,
            f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type\n",
        )
    for name, sub in (props or {}).items():
        _schema(sub, f"{where}.properties[{name}].value")
    if "items" in schema:
        _schema(schema["items"], f"{where}.items")
    for k, sub in enumerate(schema.get("anyOf") or []):
        _schema(sub, f"{where}.any_of[{k}]")


# --- answers ------------------------------------------------------------------------------


def _texts_of(content: dict[str, Any]) -> list[str]:
    return [p["text"] for p in content.get("parts") or [] if isinstance(p.get("text"), str)]


def _words(payload: dict[str, Any]) -> int:
    system = payload.get("systemInstruction")
    contents = [*payload["contents"], *([system] if system else [])]
    return sum(len(t.split()) for c in contents for t in _texts_of(c))


def _answers(reply: GeminiReply, payload: dict[str, Any]) -> list[str]:
    if reply.candidates is not None:
        return list(reply.candidates)
    text = reply.text
    if text is None:
        if reply.function_calls:
            text = ""
        else:
            users = [c for c in payload["contents"] if c.get("role", "user") == "user"]
            text = "Echo: " + (" ".join(_texts_of(users[-1])) if users else "")
    count = (payload.get("generationConfig") or {}).get("candidateCount") or 1
    return [text] * count


def _call_parts(reply: GeminiReply) -> list[dict[str, Any]]:
    parts = []
    for k, (name, args) in enumerate(reply.function_calls):
        call: dict[str, Any] = {"name": name, "args": args}
        if reply.call_ids:
            call["id"] = f"fc-{uuid.uuid4().hex[:12]}"
        part: dict[str, Any] = {"functionCall": call}
        if k == 0 and reply.thought_signature:
            part["thoughtSignature"] = reply.thought_signature
        parts.append(part)
    return parts


def _usage(reply: GeminiReply, payload: dict[str, Any], answers: list[str]) -> dict[str, Any]:
    if reply.usage is not None:
        return dict(reply.usage)
    prompt = _words(payload)
    out = sum(len(a.split()) for a in answers) + len(reply.function_calls) * len(answers)
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": out,
        "totalTokenCount": prompt + out,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }


def _ratings(blocked: bool) -> list[dict[str, Any]]:
    rating = {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
    return [{**rating, "blocked": True}] if blocked else [{**rating, "probability": "NEGLIGIBLE"}]


def _candidate(index: int, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    cand: dict[str, Any] = {}
    if parts:
        cand["content"] = {"parts": parts, "role": "model"}
    if finish:
        cand["finishReason"] = finish
        cand["safetyRatings"] = _ratings(finish == "SAFETY")
    if index:  # proto3 JSON leaves out a zero index, as Google's responses do
        cand["index"] = index
    return cand


def _envelope(model: str, rid: str, **fields: Any) -> dict[str, Any]:
    return {**fields, "modelVersion": model, "responseId": rid}


def _blocked(reply: GeminiReply, payload: dict[str, Any], model: str, rid: str) -> dict[str, Any]:
    prompt = _words(payload)
    feedback = {"blockReason": reply.block_reason, "safetyRatings": _ratings(True)}
    usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
    return _envelope(model, rid, promptFeedback=feedback, usageMetadata=usage)


def _whole(reply: GeminiReply, payload: dict[str, Any], model: str) -> dict[str, Any]:
    rid = uuid.uuid4().hex[:20]
    if reply.block_reason:
        return _blocked(reply, payload, model, rid)
    answers = _answers(reply, payload)
    candidates = []
    for i, text in enumerate(answers):
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        parts += _call_parts(reply)
        cand = _candidate(i, parts, reply.finish_reason)
        cand["index"] = i  # whole responses carry it
        candidates.append(cand)
    return _envelope(
        model, rid, candidates=candidates, usageMetadata=_usage(reply, payload, answers)
    )


def _events(reply: GeminiReply, payload: dict[str, Any], model: str) -> Iterator[dict[str, Any]]:
    """The stream's GenerateContentResponse events: text pieces of every candidate side by
    side, function calls whole, each candidate's finishReason on its last event."""
    rid = uuid.uuid4().hex[:20]
    if reply.block_reason:
        yield _blocked(reply, payload, model, rid)
        return
    answers = _answers(reply, payload)
    calls = _call_parts(reply)
    parts = [pieces(a, reply.split or DEFAULT_SPLIT) for a in answers]
    steps: list[list[tuple[int, list[dict[str, Any]]]]] = []
    for k in range(max(len(p) for p in parts)):
        steps.append([(i, [{"text": p[k]}]) for i, p in enumerate(parts) if k < len(p)])
    if calls:
        steps.append([(i, calls) for i in range(len(answers))])
    if not steps:
        steps.append([(i, []) for i in range(len(answers))])
    last = {
        i: max(s for s, step in enumerate(steps) if any(j == i for j, _ in step))
        for i in range(len(answers))
    }
    full = _usage(reply, payload, answers)
    for s, step in enumerate(steps):
        candidates = [
            _candidate(i, parts, reply.finish_reason if last[i] == s else None) for i, parts in step
        ]
        event: dict[str, Any] = {"candidates": candidates}
        final = s == len(steps) - 1
        if final or reply.usage_each_event:
            event["usageMetadata"] = (
                full
                if final
                else {
                    "promptTokenCount": full["promptTokenCount"],
                    "candidatesTokenCount": s + 1,
                    "totalTokenCount": full["promptTokenCount"] + s + 1,
                }
            )
        yield _envelope(model, rid, **event)
