"""What every fake upstream shares: an aiohttp server on a free loopback port that
answers every path, a FIFO of scripted replies, and the requests it received.

Subclasses implement `_handle` and extend `reset` for their own counters. Also the
helpers their streams share: `pieces` (text cut into deltas) and `HostileWriter`
(writes cut at awkward bytes and coalesced).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
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


def pieces(text: str, sizes: Sequence[int]) -> list[str]:
    """Cut `text` into pieces of cycled `sizes` (str characters, never mid UTF-8)."""
    out: list[str] = []
    pos = 0
    for size in itertools.cycle([s for s in sizes if s > 0] or [1]):
        if pos >= len(text):
            return out
        out.append(text[pos : pos + size])
        pos += size
    return out


Cuts = Callable[[int, int], list[int]]  # (write number, length) -> offsets to cut at


def one_cut(count: int, length: int) -> list[int]:
    """Every third write cut once at an arbitrary byte (maybe inside a UTF-8 sequence)."""
    return [1 + (count * 7919) % (length - 1)] if count % 3 == 1 and length > 1 else []


class HostileWriter:
    """Writes a stream so that clients' parsers get exercised: with `enabled`, each
    write is cut where `cuts` says (the pieces sent apart, a pause between them), and
    every third one is held back and goes out together with the next, in one write."""

    def __init__(self, resp: web.StreamResponse, enabled: bool, cuts: Cuts = one_cut) -> None:
        self._resp = resp
        self._enabled = enabled
        self._cuts = cuts
        self._pending = b""
        self._count = 0

    async def send(self, data: bytes) -> None:
        self._count += 1
        if not self._enabled:
            await self._resp.write(data)
            return
        data, self._pending = self._pending + data, b""
        if self._count % 3 == 2:
            self._pending = data
            return
        start = 0
        for cut in self._cuts(self._count, len(data)):
            await self._resp.write(data[start:cut])
            await asyncio.sleep(0.001)  # let the piece leave so the client reads it apart
            start = cut
        await self._resp.write(data[start:])

    async def flush(self) -> None:
        if self._pending:
            data, self._pending = self._pending, b""
            await self._resp.write(data)
