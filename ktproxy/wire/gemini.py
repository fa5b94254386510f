"""OpenAI chat requests translated into Gemini's `generateContent` request.

The `google-vertex` adapter turns the (already policy-checked) OpenAI request into
the JSON both the Gemini API and Vertex AI accept; only the URL and the credential
differ between them. Answers come back through `ktproxy.wire.gemini_response`
(whole responses, errors) and `ktproxy.wire.gemini_stream` (streams).

What a Gemini request cannot carry is refused with a 400 that names the field (an
unknown role, tool-call arguments that are not a JSON object, an uploaded file id);
what has no Gemini counterpart and does not shape the answer's content (`user`,
`store`, `metadata`, `parallel_tool_calls`, `logit_bias`, `logprobs`, ...) is left
out, because Google rejects every field it does not know.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from ktproxy.errors import bad_request
from ktproxy.wire.gemini_schema import clean_schema

Json = dict[str, Any]

# Gemini 3 refuses a replayed function call without the thought signature it came
# with; Google documents this value for history that has none (written by another
# model, or by a client that dropped `extra_content`).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg"}


def gemini_request(request: Mapping[str, Any]) -> Json:
    """The `generateContent` body for an OpenAI chat completion request."""
    model = str(request.get("model") or "")
    contents, system = _contents(request.get("messages"), model)
    if not contents and system:
        # OpenAI answers a conversation of system messages alone; Gemini needs contents.
        contents, system = [{"role": "user", "parts": system}], []
    out: Json = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = request.get("tools")
    choice = request.get("tool_choice")
    if tools is None and request.get("functions") is not None:
        tools = [{"type": "function", "function": f} for f in request["functions"] or []]
        choice = _legacy_choice(request.get("function_call"))
    declarations = _declarations(tools)
    if declarations:
        config, declarations = _tool_config(choice, declarations)
        out["tools"] = [{"functionDeclarations": declarations}]
        if config is not None:
            out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(request)
    if generation:
        out["generationConfig"] = generation
    return out


def _contents(messages: Any, model: str) -> tuple[list[Json], list[Json]]:
    if not isinstance(messages, list):
        raise bad_request("`messages` must be a list.", param="messages")
    contents: list[Json] = []
    system: list[Json] = []
    # Tool results name their call only by id; Gemini wants the function's name.
    names: dict[str, str] = {}
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise bad_request("A message must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), f"{where}.content"))
        elif role == "user":
            _append(contents, "user", _user_parts(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            parts = _text_parts(message.get("content"), f"{where}.content")
            parts.extend(_call_parts(message.get("tool_calls"), names, model, where))
            call = message.get("function_call")
            if isinstance(call, Mapping):  # the pre-tools form of one call
                parts.extend(_call_parts([{"function": call}], names, model, where))
            _append(contents, "model", parts)
        elif role in ("tool", "function"):
            name = message.get("name") if role == "function" else None
            if name is None:
                name = names.get(str(message.get("tool_call_id")))
            if not isinstance(name, str) or not name:
                raise bad_request(
                    f"The tool result in {where} answers no tool call of an earlier "
                    "assistant message (its `tool_call_id` is unknown).",
                    param=f"{where}.tool_call_id",
                )
            content = _text_parts(message.get("content"), f"{where}.content")
            text = "".join(p["text"] for p in content)
            part = {"functionResponse": {"name": name, "response": _tool_response(text)}}
            _append(contents, "user", [part], function_response=True)
        else:
            raise bad_request(f"Unsupported message role {role!r}.", param=f"{where}.role")
    return contents, system


def _append(
    contents: list[Json], role: str, parts: list[Json], *, function_response: bool = False
) -> None:
    """Consecutive messages of one role share a content (the answers to parallel calls
    must, and Gemini rejects a content without parts)."""
    if not parts:
        return
    if contents:
        last = contents[-1]
        if last["role"] == role and _is_response(last) == function_response:
            last["parts"].extend(parts)
            return
    contents.append({"role": role, "parts": parts})


def _is_response(content: Json) -> bool:
    return any("functionResponse" in p for p in content["parts"])


def _text_parts(content: Any, where: str) -> list[Json]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, Mapping) and part.get("type") in ("text", "refusal"):
                text = part.get(part["type"])
                if isinstance(text, str) and text:
                    parts.append({"text": text})
            else:
                raise bad_request("Only text parts are allowed here.", param=f"{where}[{j}]")
        return parts
    raise bad_request("`content` must be a string or a list of parts.", param=where)


def _user_parts(content: Any, where: str) -> list[Json]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    parts: list[Json] = []
    for j, part in enumerate(content):
        param = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            parts.extend(_text_parts([part], where))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str) or not url:
                raise bad_request("An image part needs `image_url.url`.", param=param)
            parts.append(_media(url, "image/jpeg", param))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            data, fmt = audio.get("data"), str(audio.get("format") or "wav")
            if not isinstance(data, str):
                raise bad_request("An audio part needs `input_audio.data`.", param=param)
            mime = _AUDIO_MIME.get(fmt, f"audio/{fmt}")
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        elif kind == "file":
            file = part.get("file") or {}
            data = file.get("file_data")
            if not isinstance(data, str):
                raise bad_request(
                    "Only inline files (`file.file_data`) can be sent to Gemini; "
                    "uploaded file ids are the OpenAI Files API's.",
                    param=param,
                )
            guess = mimetypes.guess_type(str(file.get("filename") or ""))[0]
            parts.append(_media(data, guess or "application/pdf", param, raw_base64=True))
        else:
            raise bad_request(f"Unsupported content part type {kind!r}.", param=param)
    return parts


def _media(url: str, default_mime: str, param: str, *, raw_base64: bool = False) -> Json:
    """A data URL as inline bytes; any other URL (https, gs://) as a file reference."""
    if url.startswith("data:"):
        head, sep, payload = url[5:].partition(",")
        if not sep:
            raise bad_request("Malformed data URL.", param=param)
        mime, *params = head.split(";")
        if "base64" not in params:
            payload = base64.b64encode(unquote_to_bytes(payload)).decode()
        return {"inlineData": {"mimeType": mime or default_mime, "data": payload}}
    if raw_base64:
        return {"inlineData": {"mimeType": default_mime, "data": url}}
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or default_mime
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _call_parts(calls: Any, names: dict[str, str], model: str, where: str) -> list[Json]:
    if not isinstance(calls, list):
        return []
    parts: list[Json] = []
    for j, call in enumerate(calls):
        param = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(name, str) or not name:
            raise bad_request("A tool call needs `function.name`.", param=param)
        raw = fn.get("arguments") or "{}"
        try:
            args = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise bad_request(
                "Tool call arguments must be a JSON object for Gemini.",
                param=f"{param}.function.arguments",
            )
        if isinstance(call.get("id"), str):
            names[call["id"]] = name
        part: Json = {"functionCall": {"name": name, "args": args}}
        signature = _signature(call)
        if signature is None and not parts and model.startswith("gemini-3"):
            signature = SKIP_SIGNATURE  # only the first call of a step must carry one
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _signature(call: Mapping[str, Any]) -> str | None:
    """The thought signature a tool call came back with (see `tool_call`)."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, Mapping) else None
    sig = google.get("thought_signature") if isinstance(google, Mapping) else None
    return sig if isinstance(sig, str) and sig else None


def _tool_response(text: str) -> Json:
    """Gemini wants an object: a JSON object result is sent as is; anything else as
    `output`, the key Google names for a function's output."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"output": text}
    return value if isinstance(value, dict) else {"output": value}


def _declarations(tools: Any) -> list[Json]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("`tools` must be a list.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise bad_request("Only function tools can be sent to Gemini.", param=f"tools[{i}]")
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise bad_request("A tool needs `function.name`.", param=f"tools[{i}].function")
        decl: Json = {"name": fn["name"]}
        if isinstance(fn.get("description"), str):
            decl["description"] = fn["description"]
        params = fn.get("parameters")
        if isinstance(params, Mapping):
            schema = clean_schema(params)
            # Gemini rejects an OBJECT without properties; a function without
            # parameters is declared without any.
            if schema.get("properties") or schema.get("type", "OBJECT") != "OBJECT":
                decl["parameters"] = schema
        out.append(decl)
    return out


def _legacy_choice(function_call: Any) -> Any:
    if isinstance(function_call, Mapping):
        return {"type": "function", "function": dict(function_call)}
    return function_call


def _tool_config(choice: Any, decls: list[Json]) -> tuple[Json | None, list[Json]]:
    """`functionCallingConfig` for an OpenAI `tool_choice`; `allowed_tools` in auto
    mode narrows the declarations instead, as Gemini allows names only with ANY."""
    if choice is None:
        return None, decls
    if choice == "none":
        return {"mode": "NONE"}, decls
    if choice == "auto":
        return {"mode": "AUTO"}, decls
    if choice == "required":
        return {"mode": "ANY"}, decls
    if isinstance(choice, Mapping):
        if choice.get("type") == "function" and isinstance(choice.get("function"), Mapping):
            name = choice["function"].get("name")
            if isinstance(name, str):
                return {"mode": "ANY", "allowedFunctionNames": [name]}, decls
        allowed = choice.get("allowed_tools")
        if choice.get("type") == "allowed_tools" and isinstance(allowed, Mapping):
            names = [
                t["function"]["name"]
                for t in allowed.get("tools") or []
                if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
            ]
            if not names:
                return {"mode": "NONE"}, decls
            if allowed.get("mode") == "required":
                return {"mode": "ANY", "allowedFunctionNames": names}, decls
            return {"mode": "AUTO"}, [d for d in decls if d["name"] in names]
    raise bad_request("Unsupported `tool_choice` for Gemini.", param="tool_choice")


def _generation_config(request: Mapping[str, Any]) -> Json:
    config: Json = {}
    limit = request.get("max_completion_tokens")
    if limit is None:
        limit = request.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if request.get(openai_name) is not None:
            config[gemini_name] = request[openai_name]
    stop = request.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    n = request.get("n")
    if isinstance(n, int) and n != 1:
        config["candidateCount"] = n
    fmt = request.get("response_format")
    if isinstance(fmt, Mapping):
        if fmt.get("type") in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        if fmt.get("type") == "json_schema" and isinstance(spec, Mapping):
            schema = spec.get("schema")
            if isinstance(schema, Mapping):
                config["responseSchema"] = clean_schema(schema, ordered=True)
    return config
