"""Adapter for Ollama, over either of its chat APIs (`ollama.api` of the target).

`openai` (the default): Ollama's OpenAI-compatible `/v1/chat/completions`, served
by the OpenAI pass-through unchanged. `native`: `/api/chat`, with the request and
the answer translated by `ktproxy.wire.ollama`, for Ollama-only knobs (`options`,
`keep_alive`) and versions or deployments without the compatible API.

Ollama itself takes no key; a configured or client key is still sent as a bearer
token, for an Ollama behind an authenticating proxy.
"""

from __future__ import annotations

from functools import partial

import orjson

from ktproxy.config import OllamaOptions, Target, Timeouts
from ktproxy.errors import bad_request
from ktproxy.providers.base import UpstreamCall, UpstreamResponse
from ktproxy.providers.http import TranslatedResponse
from ktproxy.providers.openai import OpenAIProvider
from ktproxy.providers.pool import OriginPool
from ktproxy.wire import ollama as wire

# Response headers worth passing on from an Ollama (or the proxy in front of it).
PASS_NATIVE_HEADERS = ("retry-after", "x-request-id")

_DEFAULTS = OllamaOptions()


class OllamaProvider(OpenAIProvider):
    """Talks to `<base_url>/v1/chat/completions` or `<base_url>/api/chat`."""

    kind = "ollama"
    requires_key = False  # a local Ollama has none; one is sent when configured

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        api_key: str | None,
        pool: OriginPool | None,
    ) -> None:
        super().__init__(target, timeouts, api_key, pool)
        self.options = target.ollama or _DEFAULTS
        self.native_url = self.origin + "/api/chat"

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        if self.options.api == "openai":
            return await super().chat(call)
        return await self._native(call)

    async def _native(self, call: UpstreamCall) -> UpstreamResponse:
        try:
            request = orjson.loads(call.body)
            if not isinstance(request, dict):
                raise bad_request("Request body must be a JSON object.")
            body = orjson.dumps(wire.native_request(request))
        except orjson.JSONDecodeError:
            raise bad_request("Request body is not valid JSON.", code="invalid_json") from None
        model = str(request.get("model") or self.target.model)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/x-ndjson" if call.stream else "application/json",
        }
        if call.api_key:
            headers["Authorization"] = f"Bearer {call.api_key}"
        resp = await self._post(self.native_url, body, headers)
        stream = None
        if call.stream:
            options = request.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            stream = wire.NativeStream(model, include_usage=include_usage)
        return TranslatedResponse(
            resp,
            self.target,
            self.timeouts,
            headers={k: v for k in PASS_NATIVE_HEADERS if (v := resp.headers.get(k))},
            translate_body=partial(wire.completion, model=model),
            translate_error=wire.error_body,
            stream=stream,
        )
