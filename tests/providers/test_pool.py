"""Pooled upstream connections (`ktproxy.providers.pool`) against a loopback server:
keep-alive reuse and expiry, the connection limit and its waiters, timeouts, cancelling,
shutdown, and requests that cannot be sent.

Every test runs on asyncio's loop and on uvloop (tests/providers/conftest.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from ktproxy import __version__
from ktproxy.providers.httpclient import ConnectFailed, Response, UpstreamTimeout, encode_request
from ktproxy.providers.pool import OriginPool, PoolStats, UpstreamPool
from tests.fakes.raw_upstream import OK, Action, Peer, RawUpstream, eventually, hold, then_close

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])

LONG = 5.0  # a timeout that is not under test: only bounds a wait
SHORT = 0.05  # a timeout that is under test: it must fire


def origin_pool(raw: RawUpstream, limit: int = 4, keepalive: float = 15.0) -> OriginPool:
    return OriginPool(raw.url, limit, keepalive, None)


async def request(
    pool: OriginPool,
    url: str,
    *,
    connect: float = LONG,
    first_byte: float = LONG,
    total: float | None = None,
) -> Response:
    return await pool.request(
        url,
        {"Authorization": "Bearer k"},
        b"{}",
        connect=connect,
        first_byte=first_byte,
        total=total,
    )


async def get(pool: OriginPool, url: str, **timeouts: float) -> bytes:
    resp = await request(pool, url, **timeouts)
    try:
        return await resp.read()
    finally:
        resp.close()


def stats(pool: OriginPool, in_use: int = 0, idle: int = 0, waiting: int = 0) -> PoolStats:
    return PoolStats(pool.origin, in_use, idle, waiting)


@pytest.fixture
async def pool(raw: RawUpstream) -> AsyncIterator[OriginPool]:
    pool = origin_pool(raw)
    yield pool
    pool.close()
    await eventually(lambda: pool.stats().in_use == 0 and pool.stats().idle == 0)


def body_after(gate: asyncio.Event) -> Action:
    """A reply whose head goes out at once and whose body waits for `gate`."""

    async def action(peer: Peer) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        await gate.wait()
        await peer.send(b"done")

    return action


# -- keep-alive ------------------------------------------------------------------------


async def test_requests_share_a_keepalive_connection(raw: RawUpstream, pool: OriginPool) -> None:
    url = f"{raw.url}/v1/chat/completions?beta=1"
    assert await get(pool, url) == b"ok"
    assert pool.stats() == stats(pool, idle=1)
    assert await get(pool, url) == b"ok"
    assert raw.accepts == 1
    assert (
        raw.requests[0]
        == (
            f"POST /v1/chat/completions?beta=1 HTTP/1.1\r\nHost: 127.0.0.1:{raw.port}\r\n"
            f"User-Agent: ktproxy/{__version__}\r\nAccept-Encoding: gzip, deflate\r\n"
            "Authorization: Bearer k\r\nContent-Length: 2\r\n\r\n{}"
        ).encode()
    )


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http/1.0", "extra-bytes", "upstream-keepalive-1s"],
)
async def test_connection_not_reused(raw: RawUpstream, pool: OriginPool, reply: bytes) -> None:
    raw.enqueue(reply)
    assert await get(pool, raw.url) == b"ok"
    assert await get(pool, raw.url) == b"ok"
    assert raw.accepts == 2


async def test_upstream_keepalive_timeout_is_honoured_when_long_enough(
    raw: RawUpstream, pool: OriginPool
) -> None:
    raw.enqueue(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok")
    assert await get(pool, raw.url) == b"ok"
    assert await get(pool, raw.url) == b"ok"
    assert raw.accepts == 1


async def test_idle_connection_expires(raw: RawUpstream) -> None:
    pool = origin_pool(raw, keepalive=SHORT)
    assert await get(pool, raw.url) == b"ok"
    await asyncio.sleep(2 * SHORT)  # idle past the keep-alive time
    assert await get(pool, raw.url) == b"ok"
    assert raw.accepts == 2
    pool.close()
    await eventually(lambda: pool.stats() == stats(pool))


async def test_idle_connection_closed_by_the_upstream_is_forgotten(
    raw: RawUpstream, pool: OriginPool
) -> None:
    raw.enqueue(then_close(OK))
    assert await get(pool, raw.url) == b"ok"
    await eventually(lambda: pool.stats().idle == 0)
    assert pool.stats() == stats(pool)
    assert await get(pool, raw.url) == b"ok"
    assert raw.accepts == 2


async def test_bytes_on_an_idle_connection_drop_it(raw: RawUpstream, pool: OriginPool) -> None:
    async def answer_then_junk(peer: Peer) -> None:
        await peer.send(OK)
        await eventually(lambda: pool.stats().idle == 1)
        await peer.send(b"junk")

    raw.enqueue(answer_then_junk)
    assert await get(pool, raw.url) == b"ok"
    await eventually(lambda: pool.stats() == stats(pool))
    assert await get(pool, raw.url) == b"ok"
    assert raw.accepts == 2


# -- the limit and its waiters ---------------------------------------------------------


async def test_limit_makes_the_next_request_wait(raw: RawUpstream) -> None:
    pool = origin_pool(raw, limit=2)
    gate = asyncio.Event()
    raw.enqueue(body_after(gate), body_after(gate))
    first = [await request(pool, raw.url), await request(pool, raw.url)]
    third = asyncio.create_task(get(pool, raw.url))
    await eventually(lambda: pool.stats().waiting == 1)
    assert pool.stats() == stats(pool, in_use=2, waiting=1)
    gate.set()
    assert [await r.read() for r in first] == [b"done", b"done"]
    assert await asyncio.wait_for(third, LONG) == b"ok"
    assert raw.accepts == 2  # the third reused a connection
    assert pool.stats() == stats(pool, idle=2)
    pool.close()


async def test_waiting_is_bounded_by_the_total_timeout(raw: RawUpstream) -> None:
    pool = origin_pool(raw, limit=1)
    raw.enqueue(hold)
    holder = asyncio.create_task(request(pool, raw.url))
    await eventually(lambda: len(raw.requests) == 1)
    with pytest.raises(UpstreamTimeout) as info:
        await request(pool, raw.url, total=SHORT)
    assert info.value.phase == "total"
    assert pool.stats() == stats(pool, in_use=1)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    await eventually(lambda: pool.stats() == stats(pool))
    pool.close()


async def test_cancelling_a_request_awaiting_its_head_frees_the_slot(
    raw: RawUpstream, pool: OriginPool
) -> None:
    raw.enqueue(hold)
    task = asyncio.create_task(request(pool, raw.url))
    await eventually(lambda: len(raw.requests) == 1)
    assert pool.stats() == stats(pool, in_use=1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: pool.stats() == stats(pool))
    assert await get(pool, raw.url) == b"ok"
    assert raw.accepts == 2  # the cancelled request's connection was not reused


async def test_cancelling_a_waiting_request_leaves_no_waiter(raw: RawUpstream) -> None:
    pool = origin_pool(raw, limit=1)
    gate = asyncio.Event()
    raw.enqueue(body_after(gate))
    resp = await request(pool, raw.url)
    waiting = asyncio.create_task(request(pool, raw.url))
    await eventually(lambda: pool.stats().waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.stats() == stats(pool, in_use=1)
    gate.set()
    assert await resp.read() == b"done"
    assert pool.stats() == stats(pool, idle=1)
    pool.close()


async def test_a_woken_waiter_that_is_cancelled_passes_its_turn_on(raw: RawUpstream) -> None:
    """Cancelled in the loop turn it was woken in, a waiter must wake the next one, or
    that one sleeps while the connection idles."""
    pool = origin_pool(raw, limit=1)
    gate = asyncio.Event()
    raw.enqueue(body_after(gate))
    resp = await request(pool, raw.url)
    second = asyncio.create_task(get(pool, raw.url))
    await eventually(lambda: pool.stats().waiting == 1)
    third = asyncio.create_task(get(pool, raw.url))
    await eventually(lambda: pool.stats().waiting == 2)
    body = asyncio.create_task(resp.read())
    gate.set()
    # The body's end returns the connection and wakes `second`; cancel it before it runs.
    async with asyncio.timeout(LONG):
        while pool.stats().waiting == 2:
            await asyncio.sleep(0)
    second.cancel()
    assert await body == b"done"
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await asyncio.wait_for(third, LONG) == b"ok"
    assert pool.stats() == stats(pool, idle=1)
    pool.close()


async def test_closing_an_unread_response_frees_the_slot(raw: RawUpstream) -> None:
    pool = origin_pool(raw, limit=1)
    raw.enqueue(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    resp = await request(pool, raw.url)
    assert pool.stats() == stats(pool, in_use=1)
    resp.close()
    await eventually(lambda: pool.stats() == stats(pool))
    assert await get(pool, raw.url) == b"ok"
    pool.close()


# -- connecting ------------------------------------------------------------------------


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """An origin whose listening socket's accept queue is full: a connect hangs (the
    kernel drops the SYNs). Non-routable addresses are not reliable here: in this
    sandbox 10.255.255.1 connects and 192.0.2.1 is refused at once."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    yield f"http://127.0.0.1:{port}"
    for s in fillers:
        s.close()
    listener.close()


async def test_connect_timeout(full_backlog: str) -> None:
    pool = OriginPool(full_backlog, 2, 15.0, None)
    with pytest.raises(UpstreamTimeout) as info:
        await get(pool, full_backlog, connect=SHORT)
    assert info.value.phase == "connect"
    assert pool.stats() == stats(pool)
    pool.close()


async def test_connect_refused_frees_the_slot() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    pool = OriginPool(f"http://127.0.0.1:{port}", 1, 15.0, None)
    for _ in range(2):
        with pytest.raises(ConnectFailed) as info:
            await get(pool, pool.origin)
        assert info.value.reason.startswith("cannot connect (")
    assert pool.stats() == stats(pool)
    pool.close()


async def test_ipv6_loopback_origin() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback (::1) on this machine")
    async with RawUpstream(host="::1") as raw:
        pool = origin_pool(raw)
        assert raw.url == f"http://[::1]:{raw.port}"
        assert await get(pool, f"{raw.url}/v1/x") == b"ok"
        assert raw.requests[0].startswith(
            f"POST /v1/x HTTP/1.1\r\nHost: [::1]:{raw.port}\r\n".encode()
        )
        pool.close()


# -- shutdown --------------------------------------------------------------------------


async def test_closing_the_pool(raw: RawUpstream) -> None:
    upstream = UpstreamPool(keepalive_timeout=15.0)
    pool = upstream.pool_for(f"{raw.url}/v1/chat/completions", 1)
    assert upstream.pool_for(f"{raw.url}/other", 7) is pool  # the first caller sizes it
    assert await get(pool, raw.url) == b"ok"
    assert upstream.stats() == [stats(pool, idle=1)]
    gate = asyncio.Event()
    raw.enqueue(body_after(gate))
    resp = await request(pool, raw.url)
    waiter = asyncio.create_task(request(pool, raw.url))
    await eventually(lambda: pool.stats().waiting == 1)
    assert upstream.connections_in_use() == 1
    await upstream.close()
    with pytest.raises(ConnectFailed) as info:
        await waiter
    assert info.value.reason == "gateway is shutting down"
    assert upstream.stats() == []
    # The connection in use finishes its exchange, then closes instead of idling.
    gate.set()
    assert await resp.read() == b"done"
    await eventually(lambda: pool.stats() == stats(pool))
    with pytest.raises(ConnectFailed):
        await get(pool, raw.url)


# -- requests that cannot be sent ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Api-Key", "secret\n"),
        ("X-Api-Key", "sec\r\nret"),
        ("X-Api-Key", "sec\rret"),
        ("X-Api-Key", "sec\x00ret"),
        ("X-Api\nKey", "v"),
        ("X-Api\rKey", "v"),
        ("X-Api\x00Key", "v"),
    ],
)
async def test_headers_that_would_split_the_request_are_refused(
    raw: RawUpstream, pool: OriginPool, name: str, value: str
) -> None:
    headers = {"Accept": "application/json", name: value, "X-Other": "fine"}
    with pytest.raises(ValueError) as info:
        encode_request("POST", "/", b"Host: x\r\n", headers, b"")
    assert str(info.value) == f"header {name!r} holds a line break or NUL"
    with pytest.raises(ValueError):
        await pool.request(raw.url, headers, b"", connect=LONG, first_byte=LONG, total=None)
    assert raw.accepts == 0 and pool.stats() == stats(pool)
