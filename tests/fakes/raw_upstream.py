"""A loopback upstream that answers with exact bytes, for the upstream HTTP client's own
tests (`tests/providers/test_httpclient.py`, `tests/providers/test_pool.py`).

Framing, keep-alive and failures are about bytes on the wire, which an aiohttp server
would normalise away. Each accepted connection reads requests (head, then a
Content-Length body) one after another and answers each with the next scripted reply:
`bytes` are written as they are; an `Action` (an async function of the `Peer`) may write
in pieces, wait, close or reset. With the script empty, `OK` answers.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Self

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until `predicate()` holds; the loop keeps turning meanwhile."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


class Peer:
    """The server's side of one connection, for scripted actions."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sent = 0  # bytes written so far

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()

    def close(self) -> None:
        """Close after what was written (a FIN)."""
        self.writer.close()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def small_send_buffer(self) -> None:
        """Make the kernel buffer little, so that a client not reading blocks our writes."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        self.writer.transport.set_write_buffer_limits(high=64 * 1024)


Action = Callable[[Peer], Awaitable[None]]
Reply = bytes | Action


async def hold(peer: Peer) -> None:
    """Never answer: wait until the client goes away."""
    await peer.reader.read()


def then_hold(data: bytes) -> Action:
    """Write `data`, then say no more until the client goes away."""

    async def action(peer: Peer) -> None:
        await peer.send(data)
        await hold(peer)

    return action


def then_close(data: bytes) -> Action:
    """Write `data`, then close the connection."""

    async def action(peer: Peer) -> None:
        await peer.send(data)
        peer.close()

    return action


def then_reset(data: bytes) -> Action:
    """Write `data`, then reset the connection."""

    async def action(peer: Peer) -> None:
        await peer.send(data)
        peer.reset()

    return action


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's bytes (head and Content-Length body); None once the client left."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return head + await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class RawUpstream:
    """A TCP server on a free loopback port answering with scripted bytes."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.tls = tls  # serve https with this server context
        self.port = 0
        self.accepts = 0
        self.requests: list[bytes] = []
        self.peers: list[Peer] = []
        self._script: deque[Reply] = deque()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def enqueue(self, *replies: Reply) -> None:
        """Script the next answers, in order, whichever connection asks."""
        self._script.extend(replies)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for peer in self.peers:
                peer.writer.transport.abort()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepts += 1
        peer = Peer(reader, writer)
        self.peers.append(peer)
        try:
            while not writer.is_closing() and (request := await read_request(reader)):
                self.requests.append(request)
                reply = self._script.popleft() if self._script else OK
                if isinstance(reply, bytes):
                    await peer.send(reply)
                else:
                    await reply(peer)
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            # Only `close()` cancels; ending quietly spares asyncio's stream callback
            # (3.11) from reporting the cancellation as an unhandled error.
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
