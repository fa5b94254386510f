"""The HTTP connection handler: a deadline for request heads, and protocol errors as JSON.

aiohttp's server waits for a request head as long as the connection's keep-alive
timeout allows and answers a request it cannot parse (smuggling-style
`Content-Length` + `Transfer-Encoding`, obs-folded or NUL-bearing headers, oversized
header lines) with a `text/plain` 400. `GuardedRunner` is an `AppRunner` whose
connections

- give a client `header_timeout` seconds to send a request's head, counted from the
  connect for the first request and from the first byte of each later one; a client
  that is slower gets a 408 (when it sent part of a head) and is disconnected, so a
  slow-drip client holds a connection for seconds, not minutes;
- answer unparsable requests with the gateway's error shape,
  `{"error": {"message", "type", "param", "code"}}`: 431 for header fields over the
  size limits, 414 for a request line over it, 400 otherwise (the connection is then
  closed, as aiohttp always does after a parse error). The message names the reason
  only, never the offending bytes, which may carry a credential.

The body's deadline (`gateway.body_timeout`) is kept by the handler that reads it
(`ktproxy.api.chat.read_body`), where a 408 can still be answered in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from ktproxy.errors import GatewayError, request_timeout


def _raw_response(error: GatewayError) -> bytes:
    """`error` as a complete HTTP/1.1 response that closes the connection."""
    body = error.body()
    reason = {408: "Request Timeout"}.get(error.status, "Error")
    head = (
        f"HTTP/1.1 {error.status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def protocol_error(exc: BaseException | None, status: int) -> GatewayError:
    """The JSON error for a request aiohttp could not parse (or a handler crash: 500)."""
    if status >= 500:
        return GatewayError(500, "The gateway failed to handle the request.", type="server_error")
    if isinstance(exc, LineTooLong):
        # The C parser reports the request line as a bytearray and header lines as bytes.
        line = exc.args[0] if exc.args else b""
        if isinstance(line, bytearray):
            return GatewayError(
                414,
                "The request line is over the gateway's size limit.",
                type="invalid_request_error",
                code="uri_too_long",
            )
        return _headers_too_large()
    reason = exc.message if isinstance(exc, HttpProcessingError) else ""
    reason = str(reason).split("\n", 1)[0].strip().rstrip(":") or "malformed request"
    if "too many headers" in reason.lower():
        return _headers_too_large()
    if status == 405:
        return GatewayError(
            405, "Method not allowed.", type="invalid_request_error", code="method_not_allowed"
        )
    return GatewayError(
        status,
        f"Malformed HTTP request: {reason}.",
        type="invalid_request_error",
        code="bad_http_request",
    )


def _headers_too_large() -> GatewayError:
    return GatewayError(
        431,
        "Request header fields are over the gateway's size limits.",
        type="invalid_request_error",
        code="request_header_fields_too_large",
    )


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler, plus the head deadline and JSON parse errors."""

    __slots__ = ("_head_timeout", "_head_timer", "_head_bytes", "_last_payload")

    def __init__(self, manager: Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False  # part of a head arrived since the last complete one
        self._last_payload: Any = None  # the body stream of the last complete head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # a connection that never sends a head is cut too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        awaiting_head = self._last_payload is None or self._last_payload.is_eof()
        super().data_received(data)
        if self._request_count != count:
            # A head completed: its body, if any, runs under the body deadline. (A
            # pipelined head begun in the same `data` is timed from its next bytes.)
            self._last_payload = self._messages[-1][1] if self._messages else None
            self._head_bytes = False
            self._disarm()
        elif data and awaiting_head:
            self._head_bytes = True
            if self._head_timer is None:
                self._arm()

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close:
            return
        if self._messages or self._request_in_progress:
            return  # a head arrived meanwhile: the handler owns the connection now
        if self._head_bytes:
            self.transport.write(_raw_response(request_timeout("head", self._head_timeout)))
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)  # logs; may raise
        error = protocol_error(exc, status)
        json = web.Response(
            status=error.status,
            body=error.body(),
            content_type="application/json",
            headers=error.headers,
        )
        if not response.keep_alive:
            json.force_close()
        return json


class GuardedServer(Server):
    """aiohttp's `Server`, making `GuardedRequestHandler` connections."""

    def __init__(self, base: Server, header_timeout: float) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` whose connections are `GuardedRequestHandler`s."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> Server:
        return GuardedServer(await super()._make_server(), self._header_timeout)
