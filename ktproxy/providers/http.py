"""What every networked adapter shares: sending a request with the target's timeouts,
mapping transport failures to the client's 502/504, and wrapping a response whose
body must be translated into OpenAI's format.

Adapters for providers that do not speak OpenAI's format (Anthropic, Gemini, Ollama's
native API) hand `TranslatedResponse` their translators; the API layer then sees an
OpenAI body or OpenAI SSE stream like from any other adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import aiohttp

from ktproxy.config import Target, Timeouts, normalise_base_url
from ktproxy.errors import GatewayError, upstream_timeout, upstream_unreachable
from ktproxy.providers.base import Provider, UpstreamResponse

MAX_ERROR_BODY = 1 << 20


def client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """connect for the TCP connect, first_byte until the response headers (switched to
    idle once they arrived, see `TranslatedResponse`), total for the whole exchange."""
    return aiohttp.ClientTimeout(
        total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.first_byte
    )


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    data: bytes,
    headers: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,
    target: Target,
    timeouts: Timeouts,
) -> aiohttp.ClientResponse:
    """POST and return once the status is known; failures as the client's 502/504."""
    tid = target.id
    try:
        return await session.post(url, data=data, headers=dict(headers), timeout=timeout)
    except aiohttp.ConnectionTimeoutError:
        raise upstream_timeout(tid, "connect", timeouts.connect) from None
    except aiohttp.SocketTimeoutError:
        raise upstream_timeout(tid, "first_byte", timeouts.first_byte) from None
    except TimeoutError:
        raise upstream_timeout(tid, "total", timeouts.total or 0.0) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise upstream_unreachable(tid, describe(exc)) from None


def describe(exc: BaseException) -> str:
    """A short reason for a client error message (never a traceback or a key)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "upstream closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "upstream response was cut short"
    return type(exc).__name__


def read_error(exc: BaseException, target: Target, timeouts: Timeouts) -> GatewayError:
    """What a failure while reading a body means for the client (504 or 502)."""
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return upstream_timeout(target.id, "idle", timeouts.idle)
    if isinstance(exc, TimeoutError):
        return upstream_timeout(target.id, "total", timeouts.total or 0.0)
    return upstream_unreachable(target.id, describe(exc))


def switch_to_idle_timeout(resp: aiohttp.ClientResponse, timeouts: Timeouts) -> None:
    """After the headers, silence between body reads is the idle timeout's business."""
    conn = resp.connection
    if conn is not None and conn.protocol is not None:
        conn.protocol.read_timeout = timeouts.idle


class NetworkedProvider(Provider):
    """An adapter that talks HTTP to `base_url` over the origin's pooled session."""

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        api_key: str | None,
        session: aiohttp.ClientSession | None,
    ) -> None:
        super().__init__(target, timeouts, api_key, session)
        assert target.base_url is not None and session is not None  # checked by lint
        self.http: aiohttp.ClientSession = session
        # The provider's origin, optional path prefix kept, a trailing /v1 removed.
        self.origin = normalise_base_url(target.base_url)
        self._timeout = client_timeout(timeouts)

    async def _post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """POST with the target's timeouts; returns once the status is known."""
        return await post(
            self.http,
            url,
            data=body,
            headers=headers,
            timeout=self._timeout,
            target=self.target,
            timeouts=self.timeouts,
        )


class StreamTranslator(Protocol):
    """Turns a provider's streamed body into OpenAI SSE bytes, incrementally."""

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes for the upstream bytes `data` (any boundaries; may be b"")."""

    def finish(self) -> bytes:
        """At upstream EOF: whatever is left (the final chunks, `data: [DONE]`)."""


class TranslatedResponse(UpstreamResponse):
    """A provider response presented in OpenAI's format.

    200 bodies go through `translate_body` (whole) or the stream translator (streamed,
    then `is_event_stream` is True and `chunks()` yields OpenAI SSE); error bodies go
    through `translate_error(status, body)`, which returns an OpenAI error body.
    """

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        target: Target,
        timeouts: Timeouts,
        *,
        headers: Mapping[str, str],
        translate_body: Callable[[bytes], bytes],
        translate_error: Callable[[int, bytes], bytes],
        stream: StreamTranslator | None,
    ) -> None:
        self._resp = resp
        self._target = target
        self._timeouts = timeouts
        self._translate_body = translate_body
        self._translate_error = translate_error
        self._stream = stream
        self.status = resp.status
        self.headers = dict(headers)
        self.is_event_stream = stream is not None and resp.status == 200
        switch_to_idle_timeout(resp, timeouts)

    async def read(self) -> bytes:
        try:
            if self.status >= 400:
                return self._translate_error(
                    self.status, await self._resp.content.read(MAX_ERROR_BODY)
                )
            return self._translate_body(await self._resp.read())
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise read_error(exc, self._target, self._timeouts) from None
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self._stream is not None
        content = self._resp.content
        try:
            while True:
                data = await content.readany()
                if not data:
                    break
                out = self._stream.feed(data)
                if out:
                    yield out
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise read_error(exc, self._target, self._timeouts) from None
        tail = self._stream.finish()
        if tail:
            yield tail

    def close(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()
