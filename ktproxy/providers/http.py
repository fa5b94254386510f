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

from ktproxy.config import Target, Timeouts, normalise_base_url
from ktproxy.errors import GatewayError, upstream_timeout, upstream_unreachable
from ktproxy.providers.base import Provider, UpstreamResponse
from ktproxy.providers.httpclient import Response, UpstreamHTTPError, UpstreamTimeout
from ktproxy.providers.pool import OriginPool

MAX_ERROR_BODY = 1 << 20


def transport_error(exc: UpstreamHTTPError, target: Target, timeouts: Timeouts) -> GatewayError:
    """What a transport failure means for the client: 504 for a timeout, else 502."""
    if isinstance(exc, UpstreamTimeout):
        seconds = {
            "connect": timeouts.connect,
            "first_byte": timeouts.first_byte,
            "idle": timeouts.idle,
            "total": timeouts.total or 0.0,
        }[exc.phase]
        return upstream_timeout(target.id, exc.phase, seconds)
    return upstream_unreachable(target.id, exc.reason)


class NetworkedProvider(Provider):
    """An adapter that talks HTTP to `base_url` over the origin's connection pool."""

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        api_key: str | None,
        pool: OriginPool | None,
    ) -> None:
        super().__init__(target, timeouts, api_key, pool)
        assert target.base_url is not None and pool is not None  # checked by lint
        self.http: OriginPool = pool
        # The provider's origin, optional path prefix kept, a trailing /v1 removed.
        self.origin = normalise_base_url(target.base_url)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """POST with the target's timeouts; returns once the status is known, with
        silence between body bytes bounded by the idle timeout from then on."""
        timeouts = self.timeouts
        try:
            resp = await self.http.request(
                url,
                headers,
                body,
                connect=timeouts.connect,
                first_byte=timeouts.first_byte,
                total=timeouts.total,
            )
        except UpstreamHTTPError as exc:
            raise transport_error(exc, self.target, timeouts) from None
        except ValueError as exc:
            raise upstream_unreachable(self.target.id, f"request not sendable: {exc}") from None
        resp.set_read_timeout(timeouts.idle)
        return resp


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
        resp: Response,
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

    async def read(self) -> bytes:
        try:
            if self.status >= 400:
                return self._translate_error(self.status, await self._resp.read(MAX_ERROR_BODY))
            return self._translate_body(await self._resp.read())
        except UpstreamHTTPError as exc:
            raise transport_error(exc, self._target, self._timeouts) from None
        finally:
            self._resp.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self._stream is not None
        resp = self._resp
        try:
            while True:
                data = await resp.readany()
                if not data:
                    break
                out = self._stream.feed(data)
                if out:
                    yield out
        except UpstreamHTTPError as exc:
            raise transport_error(exc, self._target, self._timeouts) from None
        tail = self._stream.finish()
        if tail:
            yield tail

    def close(self) -> None:
        self._resp.close()
