"""What every fake upstream shares: an aiohttp server on a free loopback port that
answers every path, a FIFO of scripted replies, and the requests it received.

Subclasses implement `_handle` and extend `reset` for their own counters.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, Self, TypeVar

from aiohttp import web

ReplyT = TypeVar("ReplyT")


class ScriptedServer(Generic[ReplyT]):
    """An in-process HTTP server with scripted replies and recorded requests."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        shutdown_timeout: float = 0.25,
        client_max_size: int = 1024**2,
    ) -> None:
        self.host = host
        # aiohttp's default (60 s graceful + 60 s after cancelling) would let one infinite or
        # stalled stream hang `close()` for two minutes; tests want it over quickly.
        self.shutdown_timeout = shutdown_timeout
        self.client_max_size = client_max_size
        self.port: int = 0
        self.requests: list[Any] = []
        self._queue: deque[ReplyT] = deque()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> None:
        """Bind a free port; a catch-all route lets tests use any base_url path prefix."""
        app = web.Application(client_max_size=self.client_max_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Origin only (no `/v1`), e.g. `http://127.0.0.1:54321`."""
        if not self.port:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}"

    def enqueue(self, *replies: ReplyT) -> None:
        """Script the next answers (FIFO); an empty queue gives the default reply."""
        self._queue.extend(replies)

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        self._queue.clear()
        self.requests.clear()
