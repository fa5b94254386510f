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

import orjson

from ktproxy.config import Target, Timeouts, normalise_base_url
from ktproxy.errors import GatewayError, upstream_timeout, upstream_unreachable
from ktproxy.providers.base import Provider, UpstreamResponse
from ktproxy.providers.httpclient import Response, UpstreamHTTPError, UpstreamTimeout
from ktproxy.providers.pool import OriginPool, TLSSettings
from ktproxy.wire.sse import DONE, MAX_EVENT_BYTES, event_data

MAX_ERROR_BODY = 1 << 20


def tls_settings(target: Target) -> TLSSettings | None:
    """The pool's view of a target's `tls:` block (None: the system CA store)."""
    if target.tls is None:
        return None
    return TLSSettings(ca_file=target.tls.ca_file, verify=target.tls.verify)


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


def _event_end(data: bytes) -> int:
    """Index just past the last blank line (an SSE event's end) in `data`, else 0.

    A line ends with LF, CRLF or CR, so a blank line shows as LF LF, CR CR or LF CR
    (which also covers CRLF CRLF; its final LF is taken along)."""
    best = 0
    for pattern in (b"\n\n", b"\r\r", b"\n\r"):
        i = data.rfind(pattern)
        if i >= 0:
            end = i + 2
            if pattern != b"\n\n" and data[end : end + 1] == b"\n":
                end += 1
            best = max(best, end)
    return best


class EventFramer:
    """Relays an OpenAI SSE stream in whole events, and tells how it ended.

    The bytes go on unchanged, but an event split across reads is held until its end
    arrives, so that a stream failing mid-way never leaves the client half an event
    before the gateway's error event. An event growing past `MAX_EVENT_BYTES` fails
    the stream (the hold is bounded); at EOF a stream that neither ended with
    `data: [DONE]` nor with an upstream error event was truncated.
    """

    __slots__ = ("_target", "_held", "_size", "_last")

    def __init__(self, target: str) -> None:
        self._target = target
        self._held: list[bytes] = []  # an unfinished event's pieces
        self._size = 0
        self._last = b""  # the last whole events passed on

    def feed(self, data: bytes) -> bytes:
        """The whole events that `data` completes (b"" while an event is unfinished)."""
        held = self._held
        if not held and (data[-2:] == b"\n\n" or data[-4:] == b"\r\n\r\n"):
            self._last = data  # the usual read: whole events
            return data
        # A blank line may straddle the previous read and this one.
        prefix = held[-1][-2:] if held else b""
        end = _event_end(prefix + data)
        if not end:
            held.append(data)
            self._size += len(data)
            if self._size > MAX_EVENT_BYTES:
                self._held, self._size = [], 0
                raise event_too_large()
            return b""
        end = max(end - len(prefix), 0)
        out = b"".join([*held, data[:end]]) if held else data[:end]
        rest = data[end:]
        self._held = [rest] if rest else []
        self._size = len(rest)
        if self._size > MAX_EVENT_BYTES:
            self._held, self._size = [], 0
            raise event_too_large()
        if out:
            self._last = out
        return out

    def finish(self) -> None:
        """At upstream EOF: raises `GatewayError` for a stream that was cut short."""
        # (Held line ends alone are the tail of the last blank line, split off.)
        if not any(part.strip(b"\r\n") for part in self._held) and self._ended():
            return
        self._held, self._size = [], 0
        raise GatewayError(
            502,
            f"Upstream `{self._target}` ended the stream without [DONE]; "
            "the response is incomplete.",
            type="upstream_error",
            code="upstream_stream_truncated",
        )

    def _ended(self) -> bool:
        body = self._last.rstrip(b"\r\n")
        if body.endswith(DONE):
            return True
        # An upstream that reports an error mid-stream ends with `data: {"error": ...}`.
        event = body[_event_end(body) :]
        data = event_data(event.replace(b"\r\n", b"\n") + b"\n\n")
        try:
            obj = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return False
        return isinstance(obj, dict) and "error" in obj


def event_too_large() -> GatewayError:
    """502 for an SSE event over `MAX_EVENT_BYTES` (the gateway holds no more)."""
    return GatewayError(
        502,
        f"Upstream sent a stream event of more than {MAX_EVENT_BYTES} bytes.",
        type="upstream_error",
        code="upstream_bad_response",
    )


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
