"""A minimal, fast OpenAI-compatible upstream for the proxy benchmark.

The benchmark compares calling this server directly with calling it through the
gateway, so everything it spends per request is noise in that comparison. It is
therefore a raw `asyncio.Protocol` on uvloop instead of an aiohttp app: every
response is prebuilt bytes, and the only per-request work is finding the end of
the request head, reading `Content-Length` bytes and looking at `"stream"`.

It still speaks HTTP/1.1 properly enough for real clients (the gateway's aiohttp
pool and the benchmark's load generator): persistent connections, pipelined
requests, `Connection: close`, HTTP/1.0 clients, and back-pressure when a client
stops reading. Request bodies sent with `Transfer-Encoding: chunked` are refused
(501), because neither client uses them and decoding them would only add code.

Streams are written the way OpenAI writes them: response headers first, then one
write per `data: {...}\\n\\n` event (chunked transfer coding, no artificial delay),
so the gateway sees events arriving in separate reads as it would in production.

    python -m benchmarks.fast_upstream --port 8001 [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from dataclasses import dataclass
from typing import cast

import orjson

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024

_MODEL = "gpt-4o-2024-08-06"
_FINGERPRINT = "fp_bench0001"
_COMPLETION_ID = "chatcmpl-bench0000000000000000000000"
_TEXT = (
    "A gateway sits between applications and model providers, so every request and "
    "every streamed token can be checked against policy before it moves on. "
)
_DONE_EVENT = b"data: [DONE]\n\n"
_LAST_CHUNK = b"0\r\n\r\n"


def completion_text(chunks: int) -> list[str]:
    """The reply as `chunks` pieces of four characters, roughly one token each."""
    needed = chunks * 4
    text = _TEXT * (needed // len(_TEXT) + 1)
    return [text[i * 4 : i * 4 + 4] for i in range(chunks)]


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _common_headers(keep_alive: bool) -> list[tuple[str, str]]:
    return [
        ("Server", "fast-upstream"),
        ("x-request-id", "req_bench"),
        ("openai-processing-ms", "1"),
        ("Connection", "keep-alive" if keep_alive else "close"),
    ]


def _json_response(
    status: str, body: bytes, keep_alive: bool, extra: list[tuple[str, str]]
) -> bytes:
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *extra,
        *_common_headers(keep_alive),
    ]
    return _head(status, headers) + body


def _error_body(message: str, code: str) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )


@dataclass(frozen=True, slots=True)
class Replies:
    """Every response the server can send, built once at start-up.

    Each reply exists in a keep-alive and a `Connection: close` variant, so that
    answering never formats anything.
    """

    completion: tuple[bytes, bytes]  # indexed by "close?": (keep-alive, close)
    stream_head: tuple[bytes, bytes]  # chunked transfer coding (HTTP/1.1)
    stream_head_http10: bytes  # no chunked coding: the body ends when the connection does
    stream_events: tuple[bytes, ...]  # raw SSE events, last one is `data: [DONE]`
    stream_chunks: tuple[bytes, ...]  # the same events in chunked transfer coding
    not_found: tuple[bytes, bytes]
    not_allowed: tuple[bytes, bytes]
    bad_json: tuple[bytes, bytes]
    bad_request: bytes  # always closes: the connection's framing is unknown
    too_large: bytes
    no_chunked: bytes

    @classmethod
    def build(cls, chunks: int) -> Replies:
        """Precompute a realistic `chat.completion` and its streamed equivalent."""
        created = int(time.time())
        pieces = completion_text(chunks)
        completion = orjson.dumps(
            {
                "id": _COMPLETION_ID,
                "object": "chat.completion",
                "created": created,
                "model": _MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(pieces),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": chunks,
                    "total_tokens": 12 + chunks,
                },
                "system_fingerprint": _FINGERPRINT,
            }
        )

        def chunk_event(delta: dict[str, object], finish: str | None) -> bytes:
            payload = orjson.dumps(
                {
                    "id": _COMPLETION_ID,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": _MODEL,
                    "system_fingerprint": _FINGERPRINT,
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
            )
            return b"data: " + payload + b"\n\n"

        events = [chunk_event({"role": "assistant", "content": "", "refusal": None}, None)]
        events += [chunk_event({"content": piece}, None) for piece in pieces]
        events.append(chunk_event({}, "stop"))
        events.append(_DONE_EVENT)
        framed = [b"%x\r\n%b\r\n" % (len(event), event) for event in events]
        framed[-1] += _LAST_CHUNK  # the terminating chunk goes out with [DONE]

        def both(
            status: str, body: bytes, extra: list[tuple[str, str]] | None = None
        ) -> tuple[bytes, bytes]:
            return (
                _json_response(status, body, True, extra or []),
                _json_response(status, body, False, extra or []),
            )

        def stream_head(keep_alive: bool, chunked: bool = True) -> bytes:
            headers = [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                *_common_headers(keep_alive),
            ]
            if chunked:
                headers.insert(0, ("Transfer-Encoding", "chunked"))
            return _head("200 OK", headers)

        return cls(
            completion=both("200 OK", completion),
            stream_head=(stream_head(True), stream_head(False)),
            stream_head_http10=stream_head(False, chunked=False),
            stream_events=tuple(events),
            stream_chunks=tuple(framed),
            not_found=both("404 Not Found", _error_body("Unknown path.", "not_found")),
            not_allowed=both(
                "405 Method Not Allowed",
                _error_body("Use POST.", "method_not_allowed"),
                [("Allow", "POST")],
            ),
            bad_json=both(
                "400 Bad Request", _error_body("Body is not a JSON object.", "invalid_json")
            ),
            bad_request=_json_response(
                "400 Bad Request", _error_body("Malformed request.", "bad_request"), False, []
            ),
            too_large=_json_response(
                "413 Payload Too Large", _error_body("Body too large.", "too_large"), False, []
            ),
            no_chunked=_json_response(
                "501 Not Implemented",
                _error_body("Chunked request bodies are not supported.", "not_implemented"),
                False,
                [],
            ),
        )


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse request heads, read bodies, answer from `Replies`."""

    def __init__(self, replies: Replies) -> None:
        self._replies = replies
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        # While a head has been parsed and its body is still arriving:
        self._pending: tuple[bytes, bytes, bool, bool] | None = None  # method, path, keep, 1.0
        self._need = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._buf.clear()

    def pause_writing(self) -> None:
        # The client is not reading: stop reading its (pipelined) requests too,
        # so unsent responses cannot pile up without bound.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        # Loop because one read may hold several pipelined requests.
        while self._transport is not None:
            if self._pending is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEAD_BYTES:
                        self._finish(self._replies.bad_request)
                    return
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                if not self._parse_head(head):
                    return
            if len(self._buf) < self._need:
                return
            assert self._pending is not None
            body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            method, path, keep_alive, http10 = self._pending
            self._pending = None
            self._respond(method, path, body, keep_alive, http10)

    def _parse_head(self, head: bytes) -> bool:
        """Set `_pending` and `_need` from a request head; answer and close if malformed."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            self._finish(self._replies.bad_request)
            return False
        method, target, version = parts
        http10 = version == b"HTTP/1.0"
        keep_alive = not http10
        length = 0
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                self._finish(self._replies.bad_request)
                return False
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = -1
                if length < 0:
                    self._finish(self._replies.bad_request)
                    return False
            elif name == b"transfer-encoding":
                self._finish(self._replies.no_chunked)
                return False
            elif name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens and not http10:
                    keep_alive = True
        if length > MAX_BODY_BYTES:
            self._finish(self._replies.too_large)
            return False
        self._pending = (method, target.partition(b"?")[0], keep_alive, http10)
        self._need = length
        return True

    def _respond(
        self, method: bytes, path: bytes, body: bytes, keep_alive: bool, http10: bool
    ) -> None:
        replies = self._replies
        close = 0 if keep_alive else 1
        if path != b"/v1/chat/completions":
            self._send(replies.not_found[close], keep_alive)
            return
        if method != b"POST":
            self._send(replies.not_allowed[close], keep_alive)
            return
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self._send(replies.bad_json[close], keep_alive)
            return
        if request.get("stream") is not True:
            self._send(replies.completion[close], keep_alive)
            return
        transport = self._transport
        assert transport is not None
        if http10:
            # No chunked coding for HTTP/1.0: the body ends when the connection does.
            transport.write(replies.stream_head_http10)
            for event in replies.stream_events:
                transport.write(event)
            transport.close()
            return
        transport.write(replies.stream_head[close])
        for chunk in replies.stream_chunks:
            transport.write(chunk)
        if not keep_alive:
            transport.close()

    def _send(self, data: bytes, keep_alive: bool) -> None:
        if keep_alive:
            assert self._transport is not None
            self._transport.write(data)
        else:
            self._finish(data)

    def _finish(self, data: bytes) -> None:
        """Write a last response and close (the transport flushes it first)."""
        transport = self._transport
        if transport is None:
            return
        transport.write(data)
        transport.close()
        self._transport = None
        self._buf.clear()


async def serve(host: str, port: int, chunks: int) -> None:
    """Listen until SIGTERM or SIGINT, printing the ready line once accepting."""
    replies = Replies.build(chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(replies), host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"upstream listening on {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve on uvloop (plain asyncio if it is missing)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fast_upstream",
        description="Fast fake OpenAI-compatible upstream for the proxy benchmark.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port (0 picks a free one)")
    parser.add_argument(
        "--chunks", type=int, default=20, help="content deltas per streamed reply (default 20)"
    )
    args = parser.parse_args(argv)
    if args.chunks < 1:
        parser.error("--chunks must be at least 1")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(args.host, args.port, args.chunks))
    else:
        uvloop.run(serve(args.host, args.port, args.chunks))


if __name__ == "__main__":
    main()
