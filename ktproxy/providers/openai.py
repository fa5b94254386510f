"""Adapter for OpenAI and any OpenAI-compatible upstream: a faithful pass-through.

The request body goes out as the gateway built it and the response comes back
byte for byte; only the key, an allow-list of client headers and the timeouts are
the adapter's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from ktproxy.config import Target, Timeouts, normalise_base_url
from ktproxy.errors import GatewayError, upstream_timeout, upstream_unreachable
from ktproxy.providers.base import Provider, UpstreamCall, UpstreamResponse

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

_MAX_ERROR_BODY = 1 << 20


class OpenAIResponse(UpstreamResponse):
    """An aiohttp response from an OpenAI-compatible upstream."""

    def __init__(self, resp: aiohttp.ClientResponse, target: Target, timeouts: Timeouts) -> None:
        self._resp = resp
        self._target = target
        self._timeouts = timeouts
        self.status = resp.status
        self.headers = {k: v for k in PASS_RESPONSE_HEADERS if (v := resp.headers.get(k))}
        ctype = resp.headers.get("content-type", "")
        self.content_type = ctype
        self.is_event_stream = ctype.startswith("text/event-stream")
        # After the headers, silence between body reads is the idle timeout's business.
        conn = resp.connection
        if conn is not None and conn.protocol is not None:
            conn.protocol.read_timeout = timeouts.idle

    async def read(self) -> bytes:
        try:
            if self.status >= 400:
                return await self._resp.content.read(_MAX_ERROR_BODY)
            return await self._resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._read_error(exc) from None
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                data = await content.readany()
                if not data:
                    return
                yield data
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._read_error(exc) from None

    def close(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()

    def _read_error(self, exc: BaseException) -> GatewayError:
        """What a failure while reading the body means for the client (504 or 502)."""
        tid = self._target.id
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return upstream_timeout(tid, "idle", self._timeouts.idle)
        if isinstance(exc, TimeoutError):
            return upstream_timeout(tid, "total", self._timeouts.total or 0.0)
        return upstream_unreachable(tid, _describe(exc))


class OpenAIProvider(Provider):
    """Talks to `<base_url>/v1/chat/completions` with the target's or the client's key."""

    kind = "openai"

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        api_key: str | None,
        session: aiohttp.ClientSession | None,
    ) -> None:
        super().__init__(target, timeouts, api_key, session)
        assert target.base_url is not None and session is not None
        self.chat_url = normalise_base_url(target.base_url) + "/v1/chat/completions"
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total,
            sock_connect=timeouts.connect,
            # Until the response headers arrive; switched to `idle` after them.
            sock_read=timeouts.first_byte,
        )

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        assert self.session is not None
        headers: dict[str, str] = {"Content-Type": "application/json"}
        headers.update(call.headers)
        if call.api_key:
            headers["Authorization"] = f"Bearer {call.api_key}"
        headers["Accept"] = "text/event-stream" if call.stream else "application/json"
        tid = self.target.id
        try:
            resp = await self.session.post(
                self.chat_url, data=call.body, headers=headers, timeout=self._timeout
            )
        except aiohttp.ConnectionTimeoutError:
            raise upstream_timeout(tid, "connect", self.timeouts.connect) from None
        except aiohttp.SocketTimeoutError:
            raise upstream_timeout(tid, "first_byte", self.timeouts.first_byte) from None
        except TimeoutError:
            raise upstream_timeout(tid, "total", self.timeouts.total or 0.0) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise upstream_unreachable(tid, _describe(exc)) from None
        return OpenAIResponse(resp, self.target, self.timeouts)


def _describe(exc: BaseException) -> str:
    """A short reason for a client error message (never a traceback or a key)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "upstream closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "upstream response was cut short"
    return type(exc).__name__
