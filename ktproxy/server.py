"""Process life of a gateway worker: event loop, listener, signals, drain.

Signal handlers only set a flag. On SIGTERM or SIGINT the worker stops being ready
at once (`/readyz` answers 503), closes its listener, lets in-flight requests and
streams finish within `gateway.drain_timeout`, then runs the app's cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from ktproxy.app import make_app
from ktproxy.configcheck import LoadedConfig
from ktproxy.state import STATE

log = logging.getLogger("ktproxy.server")


def display_url(host: str, port: int) -> str:
    """The URL to print: IPv4 loopback shows as `localhost`, IPv6 gets brackets."""
    if host in ("127.0.0.1", "localhost"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve(loaded: LoadedConfig, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then drain and clean up."""
    app = make_app(loaded)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that goes away releases its upstream at once
        access_log=None,
        shutdown_timeout=loaded.config.gateway.drain_timeout,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        print(f"Gateway listening on {display_url(host, port)}", flush=True)
        await stop.wait()
        app[STATE].draining = True
        log.info("draining: %d request(s) in flight", app[STATE].inflight)
    finally:
        await runner.cleanup()


def run(loaded: LoadedConfig, host: str, port: int) -> int:
    """Run one worker in the foreground; the process exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(loaded, host, port))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
