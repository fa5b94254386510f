"""Adapter for OpenAI and any OpenAI-compatible upstream: a faithful pass-through.

The request body goes out as the gateway built it and the response comes back
byte for byte; only the key, an allow-list of client headers and the timeouts are
the adapter's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ktproxy.config import Target, Timeouts
from ktproxy.errors import GatewayError
from ktproxy.providers.base import UpstreamCall, UpstreamResponse
from ktproxy.providers.http import (
    MAX_ERROR_BODY,
    EventFramer,
    NetworkedProvider,
    transport_error,
)
from ktproxy.providers.httpclient import Response, UpstreamHTTPError

# Upstream response headers a client may rely on; everything else (hop-by-hop,
# content-length, server identity, cookies) stays at the gateway.
PASS_RESPONSE_HEADERS = (
    "x-request-id",
    "openai-organization",
    "openai-processing-ms",
    "openai-project",
    "openai-version",
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


class OpenAIResponse(UpstreamResponse):
    """A response from an OpenAI-compatible upstream, passed through."""

    def __init__(
        self, resp: Response, target: Target, timeouts: Timeouts, stream: bool = False
    ) -> None:
        self._resp = resp
        self._stream = stream
        self._target = target
        self._timeouts = timeouts
        self.status = resp.status
        self.headers = {k: v for k in PASS_RESPONSE_HEADERS if (v := resp.headers.get(k))}
        ctype = resp.headers.get("content-type", "")
        self.content_type = ctype
        self.is_event_stream = ctype.startswith("text/event-stream")

    async def read(self) -> bytes:
        try:
            if self.status >= 400:
                return await self._resp.read(MAX_ERROR_BODY)
            self._check_content_type()
            return await self._resp.read()
        except UpstreamHTTPError as exc:
            raise transport_error(exc, self._target, self._timeouts) from None
        finally:
            self._resp.close()

    def _check_content_type(self) -> None:
        """A success body the client cannot use is the upstream's failure (502): an HTML
        page, an event stream nobody asked for, or JSON where a stream was asked for."""
        ctype = self.content_type.partition(";")[0].strip().lower()
        if self._stream and self.status == 200:
            wrong = f"answered a stream request with {ctype or 'no content type'}"
        elif ctype and ctype != "application/json" and not ctype.endswith("+json"):
            wrong = f"returned {ctype} instead of JSON"
        else:
            return
        raise GatewayError(
            502,
            f"Upstream `{self._target.id}` {wrong}.",
            type="upstream_error",
            code="upstream_bad_response",
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """Whole SSE events as they complete; `GatewayError` for a stream that fails,
        one event over the size bound included, or ends without `[DONE]`."""
        resp = self._resp
        framer = EventFramer(self._target.id)
        try:
            while True:
                data = await resp.readany()
                if not data:
                    break
                data = framer.feed(data)
                if data:
                    yield data
        except UpstreamHTTPError as exc:
            raise transport_error(exc, self._target, self._timeouts) from None
        framer.finish()

    def close(self) -> None:
        self._resp.close()


class OpenAIProvider(NetworkedProvider):
    """Talks to `<base_url>/v1/chat/completions` with the target's or the client's key."""

    kind = "openai"

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        headers: dict[str, str] = {"Content-Type": "application/json"}
        headers.update(call.headers)
        if call.api_key:
            headers["Authorization"] = f"Bearer {call.api_key}"
        headers["Accept"] = "text/event-stream" if call.stream else "application/json"
        resp = await self._post(self.origin + "/v1/chat/completions", call.body, headers)
        return OpenAIResponse(resp, self.target, self.timeouts, call.stream)
