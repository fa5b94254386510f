"""A bare aiohttp pass-through: what any aiohttp proxy costs on this machine, policies aside.

One process on uvloop, one `aiohttp.web` route: `POST /v1/chat/completions` is sent on
to `--upstream` with one pooled `aiohttp.ClientSession`, and the answer is relayed — a
whole body as it came, an event stream (`text/event-stream`) byte for byte as each
read returns it. Nothing is parsed, checked or logged; the request body is not even
decoded. `compare_litellm` runs it next to ktproxy so that the report shows where the
framework ceiling sits: ktproxy can only beat it by doing less per request, and
whatever the policies cost shows as the distance below it.

    python -m benchmarks.passthrough --port 8002 --upstream http://127.0.0.1:8001

It prints `passthrough listening on PORT` once it accepts connections and stops on
SIGTERM or SIGINT. Exit code 2 when it cannot listen (the port is taken, say).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

PATH = "/v1/chat/completions"
MAX_CONNECTIONS = 256  # as many upstream connections as the gateway's bench config allows
REQUEST_TIMEOUT = 30.0
# The request headers worth sending on: the upstream needs the body's type and, for a
# real provider, the key; everything else (Host, lengths, Connection) is per hop.
FORWARDED = ("Content-Type", "Authorization")

UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


async def relay(request: web.Request) -> web.StreamResponse:
    """Send the request on unchanged and relay the upstream's status, type and body."""
    session = request.app[SESSION]
    headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
    body = await request.read()
    response: web.StreamResponse | None = None
    try:
        async with session.post(request.app[UPSTREAM], data=body, headers=headers) as upstream:
            content_type = upstream.headers.get("Content-Type", "application/octet-stream")
            if not content_type.startswith("text/event-stream"):
                return web.Response(
                    status=upstream.status,
                    body=await upstream.read(),
                    headers={"Content-Type": content_type},
                )
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, TimeoutError) as exc:
        if response is not None:
            # Mid-stream (either side gone): aiohttp drops the client's connection, so
            # the client sees a cut stream, as it would from a real proxy.
            raise
        return web.json_response(
            {"error": {"message": f"upstream: {type(exc).__name__}", "code": "upstream_error"}},
            status=502,
        )


def make_app(upstream: str) -> web.Application:
    """The application: one route, one client session for its whole life."""
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/") + PATH
    app.router.add_post(PATH, relay)

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(client_session)
    return app


async def serve(host: str, port: int, upstream: str) -> int:
    """Listen until SIGTERM or SIGINT; the exit code (2 when it cannot listen)."""
    runner = web.AppRunner(make_app(upstream), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            print(f"passthrough: error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 2
        print(f"passthrough listening on {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve on uvloop (plain asyncio if it is missing)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.passthrough",
        description="Bare aiohttp pass-through to an OpenAI-compatible upstream.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument(
        "--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:8001"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535")
    if not args.upstream.startswith(("http://", "https://")):
        parser.error("--upstream must be an http:// or https:// URL")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(serve(args.host, args.port, args.upstream))
    return uvloop.run(serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    sys.exit(main())
