"""The benchmark's fast upstream, plus an echo mode and a PII tripwire for the load test.

Everything is answered by `benchmarks.fast_upstream` except two cases:

- A request body holding one of the load test's PII values is refused with HTTP 400
  (`code: pii_reached_upstream`): the gateway should have redacted it, so the value
  must never arrive here. The gateway relays the 400, the locust user counts a
  failure, and the count is printed when the server stops.
- A request carrying `metadata: {"loadtest": "echo"}` gets its last user message
  back as the reply, whole or streamed in four-character deltas. Values therefore
  straddle chunk boundaries, which is what the stream redactor's hold-back is for,
  and the PII users can check exactly what came back.

    python -m loadtests.echo_upstream --port 8001 [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

import orjson

from benchmarks.fast_upstream import Replies, UpstreamProtocol, _error_body, _json_response
from loadtests.workload import CHAT_PATH, ECHO_KEY, ECHO_VALUE, PII_BYTES

_CHAT_PATH = CHAT_PATH.encode()
_ECHO_MARK = ECHO_KEY.encode()
_DELTA_CHARS = 4
_PII_REFUSAL = _error_body(
    "The load test's upstream received a PII value the gateway should have redacted.",
    "pii_reached_upstream",
)
_PII_REFUSALS = tuple(  # indexed by "close?", like the canned replies
    _json_response("400 Bad Request", _PII_REFUSAL, keep_alive, []) for keep_alive in (True, False)
)


def _last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user message (string content or text parts)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    part.get("text", "")
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text"
                )
    return ""


def _echo_completion(text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "gpt-4o-echo",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def _echo_events(text: str) -> list[bytes]:
    created = int(time.time())

    def event(delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {
            "id": "chatcmpl-echo",
            "object": "chat.completion.chunk",
            "created": created,
            "model": "gpt-4o-echo",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    pieces = [text[i : i + _DELTA_CHARS] for i in range(0, len(text), _DELTA_CHARS)]
    events = [event({"role": "assistant", "content": ""}, None)]
    events += [event({"content": piece}, None) for piece in pieces]
    events.append(event({}, "stop"))
    events.append(b"data: [DONE]\n\n")
    return events


class EchoUpstreamProtocol(UpstreamProtocol):
    """`UpstreamProtocol` with the PII tripwire and the echo mode in front of it."""

    leaks = 0  # requests refused for carrying a PII value, all connections together

    def _respond(
        self, method: bytes, path: bytes, body: bytes, keep_alive: bool, http10: bool
    ) -> None:
        if method == b"POST" and path == _CHAT_PATH:
            if any(value in body for value in PII_BYTES):
                EchoUpstreamProtocol.leaks += 1
                self._send(_PII_REFUSALS[0 if keep_alive else 1], keep_alive)
                return
            if _ECHO_MARK in body and self._echo(body, keep_alive, http10):
                return
        super()._respond(method, path, body, keep_alive, http10)

    def _echo(self, body: bytes, keep_alive: bool, http10: bool) -> bool:
        """Answer an echo request; False when it is not one (the canned reply follows)."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        metadata = request.get("metadata") if isinstance(request, dict) else None
        if not isinstance(metadata, dict) or metadata.get(ECHO_KEY) != ECHO_VALUE:
            return False
        text = _last_user_text(request)
        if request.get("stream") is not True:
            self._send(_json_response("200 OK", _echo_completion(text), keep_alive, []), keep_alive)
            return True
        transport = self._transport
        assert transport is not None
        events = _echo_events(text)
        if http10:  # no chunked coding: the body ends when the connection does
            transport.write(self._replies.stream_head_http10)
            for event in events:
                transport.write(event)
            transport.close()
            return True
        transport.write(self._replies.stream_head[0 if keep_alive else 1])
        for event in events:
            transport.write(b"%x\r\n%b\r\n" % (len(event), event))
        transport.write(b"0\r\n\r\n")
        if not keep_alive:
            transport.close()
        return True


async def serve(host: str, port: int, chunks: int) -> None:
    """Listen until SIGTERM or SIGINT; print the ready line, and the leak count at the end."""
    replies = Replies.build(chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EchoUpstreamProtocol(replies), host, port, backlog=1024, reuse_address=True
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
        print(f"pii values received: {EchoUpstreamProtocol.leaks}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve on uvloop."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.echo_upstream",
        description="Fast fake OpenAI upstream with an echo mode and a PII tripwire.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port (0 picks a free one)")
    parser.add_argument(
        "--chunks", type=int, default=20, help="content deltas per canned streamed reply"
    )
    args = parser.parse_args(argv)
    if args.chunks < 1:
        parser.error("--chunks must be at least 1")
    import uvloop

    uvloop.run(serve(args.host, args.port, args.chunks))


if __name__ == "__main__":
    main()
