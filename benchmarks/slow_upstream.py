"""A fake OpenAI-compatible upstream that streams slowly, to hold many streams open.

The memory part of `benchmarks.bench_proxy` (`--memory-streams`) needs streams that
stay open through the gateway while it samples the workers' memory. This server
answers `POST /v1/chat/completions` with `"stream": true` by sending a role delta at
once, then one four-character content delta every `--interval` seconds, `--chunks`
times, then a finish chunk and `data: [DONE]`: a stream lasts about
`chunks * interval` seconds and then ends by itself, so nothing it serves can stay
open without bound. A non-streaming request gets a `chat.completion` at once.

    python -m benchmarks.slow_upstream --port 8002 [--interval 0.5] [--chunks 40]

Speed does not matter here (its memory is not measured), so it is plain aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import orjson
from aiohttp import web

_MODEL = "gpt-4o-2024-08-06"


def _event(created: int, delta: dict[str, object], finish: str | None) -> bytes:
    payload = orjson.dumps(
        {
            "id": "chatcmpl-slow",
            "object": "chat.completion.chunk",
            "created": created,
            "model": _MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
    )
    return b"data: " + payload + b"\n\n"


def _completion(created: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-slow",
            "object": "chat.completion",
            "created": created,
            "model": _MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "slow", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        }
    )


def make_app(interval: float, chunks: int) -> web.Application:
    """The app: one route, streaming slowly when asked to."""

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="Body is not a JSON object.")
        created = int(time.time())
        if body.get("stream") is not True:
            return web.Response(body=_completion(created), content_type="application/json")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await resp.prepare(request)
        await resp.write(_event(created, {"role": "assistant", "content": ""}, None))
        for n in range(chunks):
            await asyncio.sleep(interval)
            await resp.write(_event(created, {"content": f"w{n % 100:02d} "}, None))
        await resp.write(_event(created, {}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


async def serve(host: str, port: int, interval: float, chunks: int) -> None:
    """Listen until SIGTERM or SIGINT, printing the ready line once accepting."""
    runner = web.AppRunner(make_app(interval, chunks), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    print(f"slow upstream listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        # Open streams are cut rather than waited for: shutdown stays quick.
        await runner.shutdown()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve on uvloop (plain asyncio if it is missing)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.slow_upstream",
        description="Slowly streaming fake OpenAI-compatible upstream (memory benchmark).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between deltas (default 0.5)"
    )
    parser.add_argument(
        "--chunks", type=int, default=40, help="content deltas per stream (default 40)"
    )
    args = parser.parse_args(argv)
    if args.chunks < 1 or args.interval <= 0:
        parser.error("--chunks must be at least 1 and --interval positive")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(args.host, args.port, args.interval, args.chunks))
    else:
        uvloop.run(serve(args.host, args.port, args.interval, args.chunks))


if __name__ == "__main__":
    main()
