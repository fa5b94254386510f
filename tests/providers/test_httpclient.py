"""The upstream HTTP/1.1 client connection (`ktproxy.providers.httpclient`), byte for
byte against a loopback server: framing, keep-alive, malformed responses, content
codings, timeouts, backpressure and disconnects. The pool: test_pool.py.

Every test runs on asyncio's loop and on uvloop (tests/providers/conftest.py).
"""

from __future__ import annotations

import asyncio
import gzip
import random
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import pytest

from ktproxy.providers.httpclient import (
    DECODE_STEP,
    HIGH_WATER,
    MAX_BODY,
    MAX_HEAD,
    MAX_LINE,
    MAX_TRAILERS,
    Connection,
    Disconnected,
    MalformedResponse,
    Response,
    UpstreamHTTPError,
    UpstreamTimeout,
    encode_request,
)
from tests.fakes.raw_upstream import (
    Action,
    Peer,
    RawUpstream,
    eventually,
    hold,
    then_close,
    then_hold,
    then_reset,
)

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])

REQUEST = encode_request(
    "POST", "/v1/chat/completions", b"Host: upstream\r\n", {"Content-Type": "json"}, b"{}"
)
LONG = 5.0  # a timeout that is not under test: only bounds a wait
SHORT = 0.05  # a timeout that is under test: it must fire


class Probe(Connection):
    """A `Connection` that records what it tells its pool and what it was fed."""

    def __init__(self) -> None:
        super().__init__(self._note_idle, self._note_lost)
        self.returned = 0  # messages ended with the connection reusable
        self.lost = asyncio.Event()
        self.received = 0  # bytes
        self.feeds = 0  # data_received calls
        self._progress = asyncio.Event()

    def _note_idle(self, conn: Connection) -> None:
        self.returned += 1

    def _note_lost(self, conn: Connection) -> None:
        self.lost.set()
        self._progress.set()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.feeds += 1
        self._progress.set()
        super().data_received(data)

    async def until_received(self, count: int) -> None:
        """Wait (bounded) until `count` bytes came in, or the connection is gone."""
        async with asyncio.timeout(LONG):
            while self.received < count and not self.lost.is_set():
                self._progress.clear()
                await self._progress.wait()

    async def until_lost(self) -> None:
        await asyncio.wait_for(self.lost.wait(), LONG)


Connect = Callable[[], Awaitable[Probe]]


@pytest.fixture
async def connect(raw: RawUpstream) -> AsyncIterator[Connect]:
    """Open client connections to `raw`; all are closed after the test."""
    probes: list[Probe] = []

    async def open_connection() -> Probe:
        probe = Probe()
        await asyncio.get_running_loop().create_connection(lambda: probe, raw.host, raw.port)
        probes.append(probe)
        return probe

    yield open_connection
    for probe in probes:
        probe.abort()
    for probe in probes:
        await probe.until_lost()


async def fetch(
    conn: Connection, *, first_byte: float = LONG, idle: float = LONG, total: float | None = None
) -> Response:
    """Send a request; the response once its head is in (idle timeout set as the adapters do)."""
    resp = await conn.send(REQUEST, first_byte, total)
    resp.set_read_timeout(idle)
    return resp


async def failure(conn: Connection, **timeouts: float) -> UpstreamHTTPError:
    """The error that a request and reading its whole body end with."""
    with pytest.raises(UpstreamHTTPError) as info:
        resp = await fetch(conn, **timeouts)
        await resp.read()
    return info.value


def drip(conn: Probe, pieces: Iterable[bytes], *, close: bool = False) -> Action:
    """Write `pieces` one at a time, each once the client has received all before it (so
    that each reaches the parser on its own); then maybe close."""

    async def action(peer: Peer) -> None:
        for piece in pieces:
            expected = conn.received + len(piece)
            await peer.send(piece)
            await conn.until_received(expected)
        if close:
            peer.close()

    return action


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """`data` cut at random places into pieces of 1 to 24 bytes."""
    out, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 24)
        out.append(data[pos : pos + size])
        pos += size
    return out


def chunked(body: bytes, size: int = 7) -> bytes:
    """`body` in chunk transfer coding, with chunk extensions and trailers."""
    out = []
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        ext = b';name="v;x"' if i % 2 else b" ; ext"
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
    out.append(b"0;last\r\nX-Trailer: one\r\nX-Checksum: two\r\n\r\n")
    return b"".join(out)


def head(*lines: str, status: str = "HTTP/1.1 200 OK") -> bytes:
    return "\r\n".join([status, *lines, "", ""]).encode("latin-1")


def raw_deflate(data: bytes) -> bytes:
    z = zlib.compressobj(wbits=-15)
    return z.compress(data) + z.flush()


BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93"}}]}'
)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# Responses whose body decodes to BODY, and keep the connection reusable.
FRAMED = {
    "length": head(f"Content-Length: {len(BODY)}") + BODY,
    "chunked": head("Transfer-Encoding: chunked") + chunked(BODY),
    "interim-then-chunked": (
        head(status="HTTP/1.1 100 Continue")
        + head("Link: </style.css>; rel=preload", status="HTTP/1.1 103 Early Hints")
        + head("Transfer-Encoding: Chunked")
        + chunked(BODY)
    ),
    "gzip": head("Content-Encoding: gzip", f"Content-Length: {len(gzip.compress(BODY))}")
    + gzip.compress(BODY),
    "gzip-chunked": head("Content-Encoding: x-gzip", "Transfer-Encoding: chunked")
    + chunked(gzip.compress(BODY)),
    "deflate-zlib-chunked": head("Content-Encoding: deflate", "Transfer-Encoding: chunked")
    + chunked(zlib.compress(BODY)),
    "deflate-raw": head("Content-Encoding: deflate", f"Content-Length: {len(raw_deflate(BODY))}")
    + raw_deflate(BODY),
    "deflate-raw-chunked": head("Content-Encoding: Deflate", "Transfer-Encoding: chunked")
    + chunked(raw_deflate(BODY), size=3),
}


# -- framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FRAMED)
async def test_framed_bodies_in_one_write(raw: RawUpstream, connect: Connect, name: str) -> None:
    conn = await connect()
    raw.enqueue(FRAMED[name])
    resp = await fetch(conn)
    assert resp.status == 200
    assert await resp.read() == BODY
    assert resp.at_eof()
    assert conn.returned == 1 and not conn.closed


@pytest.mark.parametrize("name", FRAMED)
async def test_framed_bodies_one_byte_per_write(
    raw: RawUpstream, connect: Connect, name: str
) -> None:
    conn = await connect()
    data = FRAMED[name]
    raw.enqueue(drip(conn, byte_by_byte(data)))
    resp = await fetch(conn)
    assert await resp.read() == BODY
    assert conn.feeds == len(data)  # every byte was parsed on its own
    assert conn.returned == 1 and not conn.closed


@pytest.mark.parametrize("name", FRAMED)
async def test_framed_bodies_in_random_pieces_on_one_connection(
    raw: RawUpstream, connect: Connect, name: str
) -> None:
    conn = await connect()
    for seed in range(10):
        raw.enqueue(drip(conn, random_pieces(FRAMED[name], random.Random(seed))))
        resp = await fetch(conn)
        assert await resp.read() == BODY, f"seed {seed}"
        assert conn.returned == seed + 1, f"seed {seed}"
    assert raw.accepts == 1


async def test_content_length_head_and_body(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    raw.enqueue(
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Two:  a \r\n"
        b"x-two:b\r\nContent-Length: 11\r\n\r\n" + b'{"ok":true}'
    )
    resp = await fetch(conn)
    assert resp.status == 201
    assert resp.headers == {
        "content-type": "application/json",
        "x-two": "a, b",
        "content-length": "11",
    }
    assert await resp.read() == b'{"ok":true}'
    assert raw.requests == [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: upstream\r\nContent-Type: json\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ]


async def test_content_length_zero(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    raw.enqueue(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", OK)
    resp = await fetch(conn)
    assert await resp.read() == b""
    assert resp.at_eof() and conn.returned == 1
    assert await (await fetch(conn)).read() == b"ok"


async def test_read_with_a_limit(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    raw.enqueue(FRAMED["length"])
    resp = await fetch(conn)
    assert await resp.read(10) == BODY[:10]


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BODY,
        b"HTTP/1.1 200 OK\r\n\r\n" + BODY,
        head("Content-Encoding: gzip", status="HTTP/1.0 200 OK") + gzip.compress(BODY),
    ],
    ids=["http/1.0", "http/1.1-no-length", "gzip"],
)
async def test_body_until_close(raw: RawUpstream, connect: Connect, data: bytes) -> None:
    conn = await connect()
    raw.enqueue(drip(conn, [data[:30], data[30:]], close=True))
    resp = await fetch(conn)
    assert await resp.read() == BODY
    await conn.until_lost()
    assert conn.returned == 0


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Encoding: gzip\r\n\r\n",
    ],
    ids=["204", "304", "empty-gzip"],
)
async def test_no_body(raw: RawUpstream, connect: Connect, data: bytes) -> None:
    conn = await connect()
    raw.enqueue(data, OK)
    resp = await fetch(conn)
    assert await resp.read() == b""
    assert conn.returned == 1
    assert await (await fetch(conn)).read() == b"ok"  # the same connection, reused
    assert raw.accepts == 1


async def test_interim_responses_are_skipped(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    raw.enqueue(FRAMED["interim-then-chunked"])
    resp = await fetch(conn)
    assert resp.status == 200
    assert resp.headers == {"transfer-encoding": "Chunked"}
    assert await resp.read() == BODY


async def test_switching_protocols_is_refused(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    raw.enqueue(head("Upgrade: websocket", "Connection: upgrade", status="HTTP/1.1 101 x"))
    exc = await failure(conn)
    assert isinstance(exc, MalformedResponse)
    assert exc.reason == "upstream switched protocols unasked"
    await conn.until_lost()
    assert conn.returned == 0


# -- keep-alive ------------------------------------------------------------------------


async def test_keepalive_connection_is_reused(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    for i in range(3):
        assert await (await fetch(conn)).read() == b"ok"
        assert conn.returned == i + 1
    assert raw.accepts == 1 and len(raw.requests) == 3


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", b"ok"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX", b"ok"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            b"ok",
        ),
    ],
    ids=["connection-close", "http/1.0", "bytes-after-length", "bytes-after-chunked", "both"],
)
async def test_connection_not_reused(
    raw: RawUpstream, connect: Connect, data: bytes, body: bytes
) -> None:
    conn = await connect()
    raw.enqueue(data)
    assert await (await fetch(conn)).read() == body
    await conn.until_lost()
    assert conn.returned == 0


async def test_http10_keepalive_is_reused(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    raw.enqueue(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok")
    assert await (await fetch(conn)).read() == b"ok"
    assert conn.returned == 1
    assert await (await fetch(conn)).read() == b"ok"
    assert raw.accepts == 1


async def test_bytes_after_a_bodiless_message_drop_the_connection(
    raw: RawUpstream, connect: Connect
) -> None:
    conn = await connect()
    raw.enqueue(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert await (await fetch(conn)).read() == b""
    await conn.until_lost()


async def test_bytes_on_an_idle_connection_drop_it(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()

    async def answer_then_junk(peer: Peer) -> None:
        await peer.send(OK)
        await eventually(lambda: conn.returned == 1)
        await peer.send(b"HTTP/1.1 200 OK\r\n")

    raw.enqueue(answer_then_junk)
    assert await (await fetch(conn)).read() == b"ok"
    await conn.until_lost()
    assert conn.closed


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("Keep-Alive: timeout=5, max=100", 5.0),
        ("Keep-Alive: max=100,TIMEOUT = 7", None),  # not `timeout=N`: ignored
        ("Keep-Alive: Timeout=3", 3.0),
        ("Keep-Alive: timeout=\u00b2", None),  # str.isdigit() is true for "²"
        ("Keep-Alive: timeout=-1", None),
    ],
)
async def test_keepalive_timeout_header(
    raw: RawUpstream, connect: Connect, header: str, seconds: float | None
) -> None:
    conn = await connect()
    raw.enqueue(head(header, "Content-Length: 2") + b"ok")
    assert await (await fetch(conn)).read() == b"ok"
    assert conn.keepalive == seconds
    assert conn.returned == 1


# -- malformed responses ---------------------------------------------------------------

STATUS = "upstream sent a malformed status line"
HEADER = "upstream sent a malformed header"
TOO_LARGE = "upstream response headers are too large"
CHUNK_SIZE = "upstream sent an invalid chunk size"
CHUNK = "upstream sent a malformed chunk"
TRAILERS = "upstream sent invalid trailers"
LENGTH = "upstream sent an invalid Content-Length"
TRANSFER = "upstream sent an unsupported transfer coding"
CORRUPT = "upstream sent a corrupt compressed body"
EARLY = "upstream compressed body ended early"
TE = "Transfer-Encoding: chunked"


def with_chunks(*lines: bytes) -> bytes:
    return head(TE) + b"".join(lines)


GZ = gzip.compress(BODY)
MALFORMED = {
    "status-digits": (b"HTTP/1.1 2x0 OK\r\n\r\n", STATUS),
    "status-short": (b"HTTP/1.1 20 OK\r\n\r\n", STATUS),
    "status-no-space": (b"HTTP/1.1 200OK\r\n\r\n", STATUS),
    "status-version": (b"HTTP/2 200 OK\r\n\r\n", STATUS),
    "status-protocol": (b"ICY 200 OK\r\n\r\n", STATUS),
    "status-empty": (b"\r\nContent-Length: 0\r\n\r\n", STATUS),
    "header-space-in-name": (head("Bad Name: x"), HEADER),
    "header-space-before-colon": (head("Name : x"), HEADER),
    "header-no-colon": (head("NoColon"), HEADER),
    "header-empty-name": (head(": x"), HEADER),
    "header-obs-fold": (head("X-A: one", " two"), HEADER),
    "header-obs-fold-tab": (head("X-A: one", "\ttwo: three"), HEADER),
    "header-nul": (head("X-A: o\x00ne"), HEADER),
    "header-bare-lf": (head("X-Request-Id: a\nSet-Cookie: b"), HEADER),
    "header-bare-cr": (head("X-Request-Id: a\rb"), HEADER),
    "head-too-large-unterminated": (head()[:-2] + b"X: " + b"a" * MAX_HEAD, TOO_LARGE),
    "head-too-large": (head("X: " + "a" * MAX_HEAD), TOO_LARGE),
    "chunk-size-0x": (with_chunks(b"0x1a\r\n"), CHUNK_SIZE),
    "chunk-size-underscore": (with_chunks(b"1_a\r\n"), CHUNK_SIZE),
    "chunk-size-negative": (with_chunks(b"-1\r\n"), CHUNK_SIZE),
    "chunk-size-plus": (with_chunks(b"+1\r\n"), CHUNK_SIZE),
    "chunk-size-space-first": (with_chunks(b" 1\r\n"), CHUNK_SIZE),
    "chunk-size-empty": (with_chunks(b"\r\n"), CHUNK_SIZE),
    "chunk-size-ext-only": (with_chunks(b";ext\r\n"), CHUNK_SIZE),
    "chunk-size-too-long": (with_chunks(b"1" * 16 + b"\r\n"), CHUNK_SIZE),
    "chunk-size-line-too-long": (with_chunks(b"1;" + b"x" * MAX_LINE), CHUNK_SIZE),
    "chunk-data-no-crlf": (with_chunks(b"5\r\nhelloXX0\r\n\r\n"), CHUNK),
    "chunk-data-lf-only": (with_chunks(b"5\r\nhello\n0\r\n\r\n"), CHUNK),
    "trailers-too-large": (
        with_chunks(b"0\r\n", b"X-T: %s\r\n" % (b"t" * 1000,) * (MAX_TRAILERS // 1000 + 1)),
        TRAILERS,
    ),
    "trailer-line-too-long": (with_chunks(b"0\r\nX: " + b"t" * MAX_LINE), TRAILERS),
    "length-conflicting": (head("Content-Length: 2", "Content-Length: 3") + b"ok", LENGTH),
    "length-conflicting-list": (head("Content-Length: 2, 3") + b"ok", LENGTH),
    "length-not-a-number": (head("Content-Length: two"), LENGTH),
    "length-negative": (head("Content-Length: -2"), LENGTH),
    "length-plus": (head("Content-Length: +2") + b"ok", LENGTH),
    "length-superscript": (head("Content-Length: \u00b2") + b"ok", LENGTH),
    "length-too-long": (head("Content-Length: " + "1" * 16), LENGTH),
    "transfer-gzip": (head("Transfer-Encoding: gzip"), TRANSFER),
    "transfer-gzip-chunked": (head("Transfer-Encoding: gzip, chunked") + chunked(GZ), TRANSFER),
    "transfer-chunked-twice": (head(TE, TE) + chunked(BODY), TRANSFER),
    "transfer-identity": (head("Transfer-Encoding: identity", "Content-Length: 2"), TRANSFER),
    "content-br": (
        head("Content-Encoding: br", "Content-Length: 2") + b"ok",
        "upstream sent an unsupported content coding (br)",
    ),
    "content-gzip-br": (
        head("Content-Encoding: gzip, br", "Content-Length: 2") + b"ok",
        "upstream sent an unsupported content coding (gzip, br)",
    ),
    "gzip-not-gzip": (head("Content-Encoding: gzip", TE) + chunked(BODY), CORRUPT),
    "gzip-bad-crc": (
        head("Content-Encoding: gzip", f"Content-Length: {len(GZ)}")
        + GZ[:-8]
        + bytes([GZ[-8] ^ 0xFF])
        + GZ[-7:],
        CORRUPT,
    ),
    "gzip-truncated": (
        head("Content-Encoding: gzip", f"Content-Length: {len(GZ) - 9}") + GZ[:-9],
        EARLY,
    ),
    "deflate-bad-adler": (
        head("Content-Encoding: deflate", TE)
        + chunked(zlib.compress(BODY)[:-1] + bytes([zlib.compress(BODY)[-1] ^ 1])),
        CORRUPT,
    ),
    "deflate-one-byte": (head("Content-Encoding: deflate", "Content-Length: 1") + b"x", EARLY),
}


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_response(raw: RawUpstream, connect: Connect, name: str) -> None:
    data, reason = MALFORMED[name]
    conn = await connect()
    raw.enqueue(data)
    exc = await failure(conn)
    assert isinstance(exc, MalformedResponse)
    assert exc.reason == reason
    await conn.until_lost()
    assert conn.returned == 0


@pytest.mark.parametrize(
    "name", ["header-obs-fold", "chunk-size-0x", "chunk-data-no-crlf", "gzip-bad-crc"]
)
async def test_malformed_response_one_byte_per_write(
    raw: RawUpstream, connect: Connect, name: str
) -> None:
    data, reason = MALFORMED[name]
    conn = await connect()
    raw.enqueue(drip(conn, byte_by_byte(data)))
    exc = await failure(conn)
    assert isinstance(exc, MalformedResponse)
    assert exc.reason == reason
    await conn.until_lost()


async def test_oversized_head_in_small_writes(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    data = head()[:-2] + b"X: " + b"a" * MAX_HEAD
    raw.enqueue(drip(conn, [data[i : i + 4096] for i in range(0, len(data), 4096)]))
    exc = await failure(conn)
    assert isinstance(exc, MalformedResponse) and exc.reason == TOO_LARGE


# -- timeouts --------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nContent-"], ids=["none", "part"])
async def test_first_byte_timeout(raw: RawUpstream, connect: Connect, sent: bytes) -> None:
    conn = await connect()
    raw.enqueue(then_hold(sent))
    exc = await failure(conn, first_byte=SHORT)
    assert isinstance(exc, UpstreamTimeout)
    assert exc.phase == "first_byte" and exc.reason == "first_byte timeout"
    await conn.until_lost()


async def test_first_byte_is_a_deadline_not_reset_by_a_dribbled_head(
    raw: RawUpstream, connect: Connect
) -> None:
    """A head arriving a byte at a time, each well within first_byte of the one before,
    still times out first_byte after the request (before, each byte re-armed it)."""
    conn = await connect()
    data = head("Content-Length: 2", "X-Padding: " + "p" * 200) + b"ok"

    async def dribble(peer: Peer) -> None:
        for i in range(len(data)):
            await peer.send(data[i : i + 1])
            await asyncio.sleep(SHORT / 5)
        await hold(peer)

    raw.enqueue(dribble)
    exc = await failure(conn, first_byte=SHORT * 4)
    assert isinstance(exc, UpstreamTimeout) and exc.phase == "first_byte"
    assert raw.peers[0].sent < len(data)  # long before the head was whole
    await conn.until_lost()


@pytest.mark.parametrize(
    "data",
    [head("Content-Length: 10") + b"hello", head(TE) + b"5\r\nhello\r\n"],
    ids=["length", "chunked"],
)
async def test_idle_timeout(raw: RawUpstream, connect: Connect, data: bytes) -> None:
    conn = await connect()
    raw.enqueue(then_hold(data))
    resp = await fetch(conn, idle=SHORT)
    assert await resp.readany() == b"hello"
    with pytest.raises(UpstreamTimeout) as info:
        await resp.readany()
    assert info.value.phase == "idle"
    await conn.until_lost()


async def test_total_timeout_before_the_head(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    raw.enqueue(hold)
    exc = await failure(conn, total=SHORT)
    assert isinstance(exc, UpstreamTimeout) and exc.phase == "total"
    await conn.until_lost()


async def test_total_timeout_while_the_body_trickles(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()

    async def trickle(peer: Peer) -> None:
        await peer.send(head(TE))
        for _ in range(500):  # bounded: 5 s at most
            await peer.send(b"1\r\nx\r\n")
            await asyncio.sleep(0.01)

    raw.enqueue(trickle)
    resp = await fetch(conn, idle=1.0, total=0.2)
    with pytest.raises(UpstreamTimeout) as info:
        while await resp.readany():
            pass
    assert info.value.phase == "total"
    await conn.until_lost()


async def test_slow_consumer_is_not_an_idle_upstream(raw: RawUpstream, connect: Connect) -> None:
    """The consumer dawdles longer than the idle timeout with the socket paused: the
    upstream's silence is ours, not an idle timeout."""
    conn = await connect()
    body = random.Random(1).randbytes(6 * HIGH_WATER)
    raw.enqueue(head(f"Content-Length: {len(body)}") + body)
    resp = await fetch(conn, idle=SHORT)
    got = []
    for _ in range(3):
        await eventually(lambda: conn._paused)
        await asyncio.sleep(3 * SHORT)  # paused past the idle timeout
        got.append(await resp.readany())
    got.append(await resp.read())
    assert b"".join(got) == body
    assert conn.returned == 1


# -- backpressure ----------------------------------------------------------------------


async def test_unread_body_stops_the_socket_being_read(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    block = random.Random(2).randbytes(64 * 1024)
    blocks = 128  # 8 MiB

    async def flood(peer: Peer) -> None:
        peer.small_send_buffer()
        await peer.send(head(f"Content-Length: {len(block) * blocks}"))
        for _ in range(blocks):
            await peer.send(block)

    raw.enqueue(flood)
    resp = await fetch(conn)
    await eventually(lambda: conn._paused)
    peer = raw.peers[0]
    # Give the server every chance to push more: it cannot, since nobody reads.
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert conn.transport is not None and not conn.transport.is_reading()
    assert HIGH_WATER < resp._buffered <= HIGH_WATER + 256 * 1024  # one socket read more
    assert peer.sent < len(block) * blocks // 2  # the server's writes block
    body = await resp.read()
    assert len(body) == len(block) * blocks and body[-len(block) :] == block
    assert conn.returned == 1 and not conn._paused


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_gzip_bomb_is_decoded_as_the_consumer_reads(
    raw: RawUpstream, connect: Connect, framing: str
) -> None:
    """~40 KiB on the wire inflating to 40 MiB: at most one decoding step is buffered at
    a time, the socket is paused meanwhile, and the whole body still arrives."""
    conn = await connect()
    size = 40 << 20
    bomb = gzip.compress(b"z" * size, compresslevel=9)
    if framing == "length":
        data = head("Content-Encoding: gzip", f"Content-Length: {len(bomb)}") + bomb
    else:
        data = head("Content-Encoding: gzip", TE) + chunked(bomb, size=len(bomb))
    raw.enqueue(data)
    resp = await fetch(conn)
    await eventually(lambda: resp._buffered > 0)
    assert resp._buffered <= DECODE_STEP  # not the 40 MiB at once
    total = 0
    while chunk := await resp.readany():
        assert len(chunk) <= DECODE_STEP and chunk.count(b"z") == len(chunk)
        total += len(chunk)
    assert total == size
    assert conn.returned == 1  # handed back once decoded whole


async def test_a_whole_body_over_max_body_is_refused(raw: RawUpstream, connect: Connect) -> None:
    conn = await connect()
    bomb = gzip.compress(b"z" * (MAX_BODY + 1), compresslevel=9)
    raw.enqueue(head("Content-Encoding: gzip", f"Content-Length: {len(bomb)}") + bomb)
    resp = await fetch(conn)
    with pytest.raises(MalformedResponse) as info:
        await resp.read()
    assert "too large" in info.value.reason
    # Refused by the reader: the connection is reused only if the body was whole.
    assert conn.returned == 1 or conn.closed


# -- disconnects -----------------------------------------------------------------------

CLOSED = "upstream closed the connection"
CUT = "upstream response was cut short"


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (then_close(b""), CLOSED),
        (then_close(b"HTTP/1.1 200 OK\r\nContent-"), CUT),
        (then_close(head("Content-Length: 10") + b"hello"), CUT),
        (then_close(head(TE) + b"5\r\nhel"), CUT),
        (then_close(head(TE) + b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n"), CUT),
        (then_reset(b""), CLOSED),
    ],
    ids=["before-response", "in-head", "in-length-body", "in-chunk", "in-trailers", "reset"],
)
async def test_disconnected(
    raw: RawUpstream, connect: Connect, action: Action, reason: str
) -> None:
    conn = await connect()
    raw.enqueue(action)
    exc = await failure(conn)
    assert isinstance(exc, Disconnected)
    assert exc.reason == reason
    assert conn.closed and conn.returned == 0


@pytest.mark.parametrize(
    "data",
    [head("Content-Length: 10") + b"hello", b"HTTP/1.0 200 OK\r\n\r\nhello"],
    ids=["length", "until-close"],
)
async def test_reset_mid_body(raw: RawUpstream, connect: Connect, data: bytes) -> None:
    """A reset is never the end of a body, not even one delimited by the close."""
    conn = await connect()

    async def part_then_reset(peer: Peer) -> None:
        await peer.send(data)
        await conn.until_received(len(data))
        peer.reset()

    raw.enqueue(part_then_reset)
    exc = await failure(conn)
    assert isinstance(exc, Disconnected) and exc.reason == CUT


async def test_closing_an_unread_response_drops_the_connection(
    raw: RawUpstream, connect: Connect
) -> None:
    conn = await connect()
    raw.enqueue(head("Content-Length: 10") + b"hello")
    resp = await fetch(conn)
    resp.close()
    await conn.until_lost()
    assert conn.returned == 0
    resp.close()  # twice is harmless
