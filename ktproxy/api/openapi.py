"""`GET /openapi.json`: an OpenAPI 3.1 description of the routes the gateway serves.

Written as data, by hand: request schemas name the fields the gateway itself reads
(`ktproxy.wire.openai.ChatRequestHead`, and the Anthropic fields
`ktproxy.wire.anthropic_native` maps) with the types and bounds it enforces; every
other field is allowed and forwarded. It lets schema-driven tools (schemathesis, the
fuzz in `tests/api/test_bad_input.py`) generate requests, and tells a reader which
errors each route answers with.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ktproxy.wire.openai import MAX_CHOICES, MAX_TOKENS_BOUND

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
        for s in statuses
    }


_TOKENS = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS_BOUND - 1}
_CONTENT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string", "minLength": 1}, "text": {"type": "string"}},
}
CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"type": "string", "minLength": 1},
                    "content": {
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "items": _CONTENT_PART},
                            {"type": "null"},
                        ]
                    },
                },
            },
        },
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": ["boolean", "null"]}},
        },
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_CHOICES},
        "max_tokens": _TOKENS,
        "max_completion_tokens": _TOKENS,
        "temperature": {"type": ["number", "null"]},
        "top_p": {"type": ["number", "null"]},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
                {"type": "null"},
            ]
        },
        "tools": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "minLength": 1},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "minLength": 1}},
                    },
                },
            },
        },
        "tool_choice": {"type": ["string", "object", "null"]},
        "user": {"type": ["string", "null"]},
        "metadata": {"type": ["object", "null"]},
    },
}
_BLOCK = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["text", "image", "document", "tool_use", "tool_result"]},
        "text": {"type": "string"},
    },
}
MESSAGES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_BOUND - 1},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": _BLOCK}]},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _BLOCK}]},
                },
            },
        },
        "stream": {"type": "boolean"},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
    },
}


PLAYGROUND_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string"},
        "direction": {"type": "string", "enum": ["request", "response"]},
        "consumer": {"type": ["string", "null"]},
        "role": {
            "type": "string",
            "enum": ["user", "tool", "function", "system", "developer", "assistant"],
        },
    },
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(description: str, media: str = "application/json") -> dict[str, Any]:
    return {"200": {"description": description, "content": {media: {"schema": {}}}}}


_CHAT_OPERATION = {
    "summary": "OpenAI chat completion, streamed (SSE) or not",
    "security": [{}, {"bearer": []}, {"gatewayKey": []}],
    "requestBody": _json_body(CHAT_REQUEST),
    "responses": {
        **_ok("a chat.completion, or a text/event-stream of chunks"),
        **_errors(400, 401, 404, 408, 413, 415, 422, 429, 502, 503, 504),
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "ktproxy gateway", "version": "1"},
    "paths": {
        "/v1/chat/completions": {"post": {**_CHAT_OPERATION, "operationId": "chat"}},
        "/chat/completions": {"post": {**_CHAT_OPERATION, "operationId": "chatNoPrefix"}},
        "/v1/messages": {
            "post": {
                "operationId": "messages",
                "summary": "Anthropic Messages, streamed or not (errors in Anthropic's shape)",
                "security": [{}, {"apiKey": []}, {"bearer": []}],
                "requestBody": _json_body(MESSAGES_REQUEST),
                "responses": {
                    **_ok("a message, or Anthropic's event stream"),
                    **_errors(400, 401, 404, 408, 413, 415, 422, 429, 502, 503, 504),
                },
            }
        },
        "/v1/models": {"get": {"operationId": "listModels", "responses": _ok("the routed models")}},
        "/v1/models/{model}": {
            "get": {
                "operationId": "getModel",
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {**_ok("one model"), **_errors(404)},
            }
        },
        "/healthz": {"get": {"operationId": "healthz", "responses": _ok("alive")}},
        "/readyz": {
            "get": {"operationId": "readyz", "responses": {**_ok("ready"), **_errors(503)}}
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "responses": _ok("Prometheus text format", "text/plain"),
            }
        },
        "/v1/kt/events": {
            "get": {
                "operationId": "listEvents",
                "summary": "audit records (admin key)",
                "security": [{"bearer": []}, {"gatewayKey": []}],
                "parameters": [
                    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                    for n in (
                        *("consumer", "model", "target", "decision", "request_id", "cursor"),
                        *("since", "until", "status", "streamed", "limit", "q"),
                    )
                ],
                "responses": {**_ok("audit records"), **_errors(400, 401, 404, 503)},
            }
        },
        "/v1/kt/events/{id}": {
            "get": {
                "operationId": "getEvent",
                "security": [{"bearer": []}, {"gatewayKey": []}],
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {**_ok("one audit record"), **_errors(401, 404)},
            }
        },
        "/v1/kt/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "traffic, blocks and latency over time from the audit store (admin key)",
                "security": [{"bearer": []}, {"gatewayKey": []}],
                "parameters": [
                    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                    for n in (
                        *("since", "until", "bucket", "consumer", "model", "target"),
                        *("status", "decision", "streamed"),
                    )
                ],
                "responses": {**_ok("statistics"), **_errors(400, 401, 404, 503)},
            }
        },
        "/v1/kt/config": {
            "get": {
                "operationId": "getConfig",
                "summary": "the active config, secrets masked, with its lint result (admin key)",
                "security": [{"bearer": []}, {"gatewayKey": []}],
                "responses": {**_ok("the active config"), **_errors(401, 404)},
            }
        },
        "/v1/kt/playground": {
            "post": {
                "operationId": "runPlayground",
                "summary": "what each policy of a chain would do to a text (admin key)",
                "security": [{"bearer": []}, {"gatewayKey": []}],
                "requestBody": _json_body(PLAYGROUND_REQUEST),
                "responses": {**_ok("the policies' findings"), **_errors(400, 401, 404, 413)},
            }
        },
        "/console": {
            "get": {
                "operationId": "console",
                "summary": "the web console (its data comes from the admin API)",
                "responses": _ok("the console page", "text/html"),
            }
        },
        "/console/": {
            "get": {
                "operationId": "consoleSlash",
                "responses": _ok("the console page", "text/html"),
            }
        },
        "/console/static/{name}": {
            "get": {
                "operationId": "consoleAsset",
                "summary": "a console asset, named by its content hash (cached immutable)",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {**_ok("the asset", "*/*"), **_errors(404)},
            }
        },
        "/openapi.json": {"get": {"operationId": "openapi", "responses": _ok("this document")}},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": {"type": ["string", "null"]},
                            "code": {"type": ["string", "null"]},
                        },
                    }
                },
            }
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "gatewayKey": {"type": "apiKey", "in": "header", "name": "x-kt-api-key"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        },
    },
}

_BODY = orjson.dumps(OPENAPI)


async def openapi_json(request: web.Request) -> web.Response:
    """Serve the OpenAPI description."""
    return web.Response(body=_BODY, content_type="application/json")
