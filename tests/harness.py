"""Real servers for tests: a gateway and fake upstreams on free loopback ports.

Both run in one background event loop thread, so the synchronous `openai` client,
the `AsyncOpenAI` client (in the test's own loop) and raw HTTP clients all talk to
them over real sockets, exactly as applications do.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from ktproxy.app import make_app
from ktproxy.configcheck import LoadedConfig, check_text
from ktproxy.protocol import GuardedRunner
from ktproxy.state import STATE, GatewayState

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread; `run` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class RunningGateway:
    """A gateway app served by aiohttp's AppRunner on a free port."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"

    @property
    def state(self) -> GatewayState:
        return self.runner.app[STATE]


async def start_gateway(config_text: str, env: Mapping[str, str] | None = None) -> RunningGateway:
    """Check `config_text` like `kt gateway run` does, then serve it on a free port."""
    loaded, problems = check_text(config_text, env=env or {}, for_start=True)
    if loaded is None:
        raise AssertionError("test config has errors: " + "; ".join(p.message for p in problems))
    return await serve(loaded, env)


async def serve(loaded: LoadedConfig, env: Mapping[str, str] | None = None) -> RunningGateway:
    """Serve an already loaded config on a free port, as `kt gateway run` would."""
    app = make_app(loaded, env or {})
    runner = GuardedRunner(
        app,
        header_timeout=loaded.config.gateway.header_timeout,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=2,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    port = server.sockets[0].getsockname()[1]
    return RunningGateway(runner, port)


def openai_config(
    upstream_url: str,
    *,
    chain: str = "[]",
    extra_target: str = "",
    gateway: str = "",
    timeouts: str = "",
    client_key: str = "forward",
) -> str:
    """A config routing `gpt-4o` (id `primary`) to an OpenAI-compatible upstream."""
    return f"""
gateway: {{port: 41002{gateway}}}
providers:
  targets:
    - id: primary
      provider: openai
      model: gpt-4o
      base_url: {upstream_url}
      secret_key_ref: {{env: UPSTREAM_KEY}}
      client_key: {client_key}
{timeouts}
{extra_target}
    - id: local
      provider: mock
      model: mock-model
policies:
  chain: {chain}
"""


UPSTREAM_KEY = "sk-gateway-upstream-key-0123456789"
GATEWAY_ENV = {"UPSTREAM_KEY": UPSTREAM_KEY}
ROOT = Path(__file__).resolve().parent.parent


def run_python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python *args` in the project root, without stdin; its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class BlackholePort:
    """A loopback port whose accept queue is full, so new connects hang (connect timeouts)."""

    def __init__(self) -> None:
        import socket

        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fillers.append(s)

    def close(self) -> None:
        for s in self._fillers:
            s.close()
        self._listener.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


_open_clients: list[Any] = []


def sdk_client(gw: RunningGateway, **kwargs: Any) -> Any:
    """An `openai.OpenAI` client for `gw` (closed by the autouse fixture after the test)."""
    from openai import OpenAI

    kwargs.setdefault("api_key", "any")
    kwargs.setdefault("max_retries", 0)
    c = OpenAI(base_url=gw.base_url, **kwargs)
    _open_clients.append(c)
    return c


def close_sdk_clients() -> None:
    """Close every client `sdk_client` made (their sockets would warn when collected)."""
    while _open_clients:
        _open_clients.pop().close()
