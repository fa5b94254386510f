"""Adapter for Anthropic's Messages API.

The OpenAI chat request the gateway built (model already rewritten, policies
applied) is translated into a Messages request and posted to
`<base_url>/v1/messages`; the answer — whole message, event stream or error — comes
back through `TranslatedResponse` in OpenAI's format, usage included, so audit
records and token limits work as with any other target. The wire translation itself
is `ktproxy.wire.anthropic` and `ktproxy.wire.anthropic_stream`; this module is only
the transport: URL, headers, key, status.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ktproxy.config import AnthropicOptions, Target, Timeouts
from ktproxy.errors import bad_request
from ktproxy.providers.base import UpstreamCall, UpstreamResponse
from ktproxy.providers.http import NetworkedProvider, TranslatedResponse
from ktproxy.providers.pool import OriginPool
from ktproxy.wire.anthropic import (
    chat_completion_body,
    include_usage,
    openai_error_body,
    to_messages_request,
)
from ktproxy.wire.anthropic_stream import ChunkStream

# Upstream response headers a client may rely on: when to retry, Anthropic's request
# id for support tickets, and the rate-limit budget (`anthropic-ratelimit-*`).
PASS_RESPONSE_HEADERS = ("retry-after", "request-id")
RATE_LIMIT_PREFIX = "anthropic-ratelimit-"

# Anthropic's "overloaded" status is not a standard HTTP status; clients, proxies and
# load balancers know 503 ("try again later") for it, and OpenAI answers 503 there.
OVERLOADED = 529

_DEFAULTS = AnthropicOptions()


def pass_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream response headers the client gets (names lower-cased)."""
    out = {name: value for name in PASS_RESPONSE_HEADERS if (value := headers.get(name))}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(RATE_LIMIT_PREFIX):
            out[lower] = value
    return out


class AnthropicProvider(NetworkedProvider):
    """Talks to `<base_url>/v1/messages` with the target's or the client's key."""

    kind = "anthropic"

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        api_key: str | None,
        pool: OriginPool | None,
    ) -> None:
        super().__init__(target, timeouts, api_key, pool)
        self.messages_url = self.origin + "/v1/messages"
        self.options = target.anthropic or _DEFAULTS

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        try:
            request = orjson.loads(call.body)
        except orjson.JSONDecodeError:
            raise bad_request("Request body is not valid JSON.", code="invalid_json") from None
        if not isinstance(request, dict):
            raise bad_request("Request body must be a JSON object.")
        body = to_messages_request(request, default_max_tokens=self.options.max_tokens)
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if call.stream else "application/json",
            "anthropic-version": self.options.version,
        }
        beta = call.headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        if call.api_key:
            headers["x-api-key"] = call.api_key
        resp = await self._post(self.messages_url, orjson.dumps(body), headers)
        stream = None
        if call.stream:
            model = str(body.get("model") or self.target.model)
            stream = ChunkStream(
                include_usage=include_usage(request), model=model, target=self.target.id
            )
        response = TranslatedResponse(
            resp,
            self.target,
            self.timeouts,
            headers=pass_headers(resp.headers),
            translate_body=chat_completion_body,
            translate_error=openai_error_body,
            stream=stream,
        )
        if response.status == OVERLOADED:
            response.status = 503
        return response
