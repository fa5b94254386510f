"""A lean HTTP/1.1 client connection for upstream calls: one request at a time per
connection, keep-alive, timeouts as the gateway defines them.

Why not aiohttp's `ClientSession`: profiling the gateway at saturation put ~60 % of its
busy samples inside `ClientSession._request` (URL objects, multidicts, tracing hooks,
cookie handling, a timer context per read), none of which an upstream call needs. The
gateway sends one POST with headers it built itself and reads a JSON body or an SSE
stream back; this module does exactly that on an `asyncio.Protocol`.

What it does:
- writes the request in one `transport.write`;
- parses the status line and headers (HTTP/1.0 and 1.1, 1xx interim responses skipped),
  then a body framed by Content-Length, chunked transfer coding, or connection close;
- decodes `gzip`/`deflate` content codings (it offers them, like aiohttp did) at most
  `DECODE_STEP` bytes at a time: a small packet that inflates enormously (a "zip bomb")
  is decoded as the consumer reads, never all at once; a whole body read with `read()`
  is refused beyond `MAX_BODY`;
- stops reading from the socket while the consumer has more than `HIGH_WATER` bytes
  unread (a slow client cannot make the gateway buffer an upstream's whole stream);
- times out in four phases, each a `UpstreamTimeout` naming it: connect (in the pool),
  first_byte (a deadline from the request written to the headers complete, not pushed
  back by a head that dribbles in), idle (silence between body bytes while the gateway
  is reading), total (the whole exchange). One timer per connection re-arms itself
  instead of being rescheduled for every packet;
- hands the connection back to its pool the moment a message ends with keep-alive, so
  the consumer's pace never holds a pooled connection.

Failures are `UpstreamHTTPError`s carrying a short reason safe to show a client (never
a traceback, a header or a key); `ktproxy.providers.http` maps them to 502/504.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Literal, cast

Phase = Literal["connect", "first_byte", "idle", "total"]

# Response head (status line + headers) and chunk-size/trailer line limits.
MAX_HEAD = 64 * 1024
MAX_LINE = 4096
MAX_TRAILERS = 16 * 1024
# Unread body bytes above which the socket stops being read until the consumer catches up.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# Decoded bytes one decompression step may produce; more waits for the consumer.
DECODE_STEP = HIGH_WATER
# A whole body read with `Response.read()` (a non-streamed completion), decoded.
MAX_BODY = 64 * 1024 * 1024

_HEX = frozenset(b"0123456789abcdefABCDEF")
_TOKEN_BAD = frozenset(b' \t"(),/:;<=>?@[\\]{}')

# Parser states. _DRAIN: the message is whole on the wire, decoded bytes still pending.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE, _DRAIN = (
    range(9)
)


class UpstreamHTTPError(Exception):
    """A transport or protocol failure; `reason` is safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamTimeout(UpstreamHTTPError):
    """An upstream took longer than the target's `phase` timeout."""

    def __init__(self, phase: Phase) -> None:
        super().__init__(f"{phase} timeout")
        self.phase: Phase = phase


class ConnectFailed(UpstreamHTTPError):
    """The TCP connection or the TLS handshake failed."""


class Disconnected(UpstreamHTTPError):
    """The upstream closed (or reset) the connection before the response was whole."""


class MalformedResponse(UpstreamHTTPError):
    """The upstream's bytes are not an HTTP/1.x response we can frame safely."""


def encode_request(
    method: str, path: str, host_headers: bytes, headers: dict[str, str], body: bytes
) -> bytes:
    """The request's bytes: request line, headers, Content-Length, body.

    Raises `ValueError` for a header that would split the request (CR, LF or NUL in a
    name or value — e.g. an API key read from a file with its trailing newline)."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers) or "\0" in lines:
        bad = next(
            name
            for name, value in headers.items()
            if any(c in name or c in value for c in "\r\n\0")
        )
        raise ValueError(f"header {bad!r} holds a line break or NUL")
    return b"".join(
        (
            f"{method} {path} HTTP/1.1\r\n".encode("ascii"),
            host_headers,
            lines.encode("utf-8", "surrogateescape"),
            b"Content-Length: %d\r\n\r\n" % len(body),
            body,
        )
    )


def parse_head(head: bytes) -> tuple[int, bool, dict[str, str]]:
    """Status, whether HTTP/1.1, and headers (lower-case names; repeats joined by ", ")."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise MalformedResponse("upstream sent a malformed status line")
    if len(rest) > 3 and rest[3:4] != b" ":
        raise MalformedResponse("upstream sent a malformed status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if (
            not colon
            or not name
            or _TOKEN_BAD.intersection(name)
            or b"\x00" in line
            or b"\r" in line
            or b"\n" in line
        ):
            # Includes obsolete line folding (a line starting with a space), and a bare CR
            # or LF, which would otherwise reach a header the gateway passes on.
            raise MalformedResponse("upstream sent a malformed header")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        old = headers.get(key)
        headers[key] = text if old is None else f"{old}, {text}"
    return int(code), version == b"HTTP/1.1", headers


class Decoder:
    """Streaming gzip/deflate content decoding, at most `step` decoded bytes per call.

    Input that would decode to more is kept (`pending`); `feed(b"")` continues with it.
    """

    def __init__(self, coding: str, step: int = DECODE_STEP) -> None:
        # gzip: 47 = 32 (detect a gzip or zlib header) + 15 (window). deflate: decided by
        # its first two bytes, which may arrive apart (see `feed`).
        self._z = None if coding == "deflate" else zlib.decompressobj(47)
        self._head = b""
        self._started = False
        self._step = step
        self._unconsumed = b""  # input not decoded yet (the step was reached)
        self._full = False  # the last call stopped at the step: zlib may hold more

    @property
    def pending(self) -> bool:
        """Decoded bytes may be waiting: call `feed(b"")` before feeding more input."""
        return self._full or bool(self._unconsumed)

    def feed(self, data: bytes) -> bytes:
        if data:
            self._started = True
        if self._unconsumed:
            data = self._unconsumed + data
            self._unconsumed = b""
        if self._z is None:
            # `deflate` means zlib-wrapped, but some servers send raw deflate; a zlib
            # header (RFC 1950: method 8, check bits) tells them apart. Deciding on a
            # first packet of one byte would misread the stream.
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = b""
            cmf, flg = data[0], data[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._z = zlib.decompressobj(15 if wrapped else -15)
        try:
            out = self._z.decompress(data, self._step)
        except zlib.error:
            raise MalformedResponse("upstream sent a corrupt compressed body") from None
        self._unconsumed = self._z.unconsumed_tail
        self._full = len(out) >= self._step
        return out

    def finish(self) -> bytes:
        if self._started and (self._z is None or not self._z.eof):
            raise MalformedResponse("upstream compressed body ended early")
        return b"" if self._z is None else self._z.flush()


class Connection(asyncio.Protocol):
    """One pooled HTTP/1.1 connection and the parser of its current response."""

    def __init__(
        self, on_idle: Callable[[Connection], None], on_lost: Callable[[Connection], None]
    ) -> None:
        self._on_idle = on_idle  # the pool takes the connection back (keep-alive)
        self._on_lost = on_lost  # the pool forgets it
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keepalive: float | None = None  # from the upstream's Keep-Alive header
        self.response: Response | None = None
        self._headers_waiter: asyncio.Future[Response] | None = None
        self._state = _DONE
        self._tail = b""
        self._remaining = 0
        self._trailer_bytes = 0
        self._reusable = True
        self._decoder: Decoder | None = None
        # Timeouts: one self-re-arming read timer, one total timer.
        self._read_timeout = 0.0
        self._read_phase: Phase = "first_byte"
        self._sent_at = 0.0  # first_byte is a deadline from here, whatever dribbles in
        self._last_data = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._total_timer: asyncio.TimerHandle | None = None
        self._paused = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, but quack alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._state == _DONE or self._state == _DRAIN:
            # Bytes nobody asked for (or after a complete message): the framing is off.
            self.abort()
            return
        self._last_data = self._loop.time()
        try:
            self._feed(data)
        except UpstreamHTTPError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost does the bookkeeping

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_CLOSE and exc is None:  # a reset cuts the body short
            self._message_done()
        elif self._state == _DRAIN:
            pass  # the message was whole; its decoded rest is still delivered
        elif self._state != _DONE:
            head = self._state == _HEAD
            if head and self.response is None and not self._tail:
                reason = "upstream closed the connection"
            else:
                reason = "upstream response was cut short"
            self._fail(Disconnected(reason))
        self._stop_timers()
        self._on_lost(self)

    def pause_writing(self) -> None:  # request bodies go out in one write; nothing to do
        pass

    def resume_writing(self) -> None:
        pass

    # -- requests ----------------------------------------------------------------------

    def send(self, data: bytes, first_byte: float, total: float | None) -> asyncio.Future[Response]:
        """Write one request; the future resolves to its `Response` once the head is in."""
        assert self.transport is not None and self._state == _DONE
        self._state = _HEAD
        self._tail = b""
        self._reusable = True
        self._decoder = None
        self.response = None
        self.keepalive = None
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self._headers_waiter = waiter
        now = self._loop.time()
        self._last_data = self._sent_at = now
        self._read_phase = "first_byte"
        self._read_timeout = first_byte
        self._read_timer = self._loop.call_at(now + first_byte, self._on_read_timer)
        if total is not None:
            self._total_timer = self._loop.call_at(now + total, self._on_total_timer)
        self.transport.write(data)
        return waiter

    def set_read_timeout(self, seconds: float) -> None:
        """After the head: silence between body bytes is bounded by `seconds` (idle)."""
        self._read_phase = "idle"
        self._read_timeout = seconds
        if self._read_timer is not None:  # still armed for first_byte: re-arm
            self._read_timer.cancel()
            self._read_timer = self._loop.call_at(self._last_data + seconds, self._on_read_timer)

    def abort(self) -> None:
        """Drop the connection at once (a response not read whole cannot be reused)."""
        self._reusable = False
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        decoder = self._decoder
        if decoder is not None and decoder.pending and self.response is not None:
            # Decode the next step first; the socket stays paused while more is pending.
            try:
                decoded = decoder.feed(b"")
            except UpstreamHTTPError as exc:
                self._fail(exc)
                return
            if decoded:
                self.response._feed([decoded])
            if decoder.pending:
                return
            if self._state == _DRAIN:
                self._message_done()
                return
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_data = self._loop.time()
            if not self.closed:
                self.transport.resume_reading()

    # -- timers ------------------------------------------------------------------------

    def _on_read_timer(self) -> None:
        self._read_timer = None
        if self._state == _DONE:
            return
        # A head arriving a byte at a time does not push the first_byte deadline back.
        since = self._sent_at if self._state == _HEAD else self._last_data
        due = since + self._read_timeout
        now = self._loop.time()
        if self._paused:
            # The consumer is behind; the upstream's silence is not the upstream's fault.
            due = now + self._read_timeout
        if now < due:
            self._read_timer = self._loop.call_at(due, self._on_read_timer)
            return
        self._fail(UpstreamTimeout(self._read_phase))

    def _on_total_timer(self) -> None:
        self._total_timer = None
        if self._state != _DONE:
            self._fail(UpstreamTimeout("total"))

    def _stop_timers(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._total_timer is not None:
            self._total_timer.cancel()
            self._total_timer = None

    # -- parsing -----------------------------------------------------------------------

    def _fail(self, exc: UpstreamHTTPError) -> None:
        """The exchange failed: tell whoever waits, drop the connection."""
        self._state = _DONE
        self._stop_timers()
        waiter, self._headers_waiter = self._headers_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        response, self.response = self.response, None
        if response is not None:
            response._set_exception(exc)
        self.abort()

    def _message_done(self) -> None:
        decoder, response = self._decoder, self.response
        if decoder is not None and response is not None and decoder.pending:
            # Whole on the wire, but decoding waits for the consumer (resume_reading).
            self._state = _DRAIN
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            self.pause_reading()
            return
        if decoder is not None and response is not None:
            try:
                tail = decoder.finish()
            except UpstreamHTTPError as exc:
                self._fail(exc)
                return
            if tail:
                response._feed([tail])
        self._state = _DONE
        self._stop_timers()
        self.response = None
        if response is not None:
            response._finish()
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        if self._reusable and not self.closed:
            self.idle_since = self._loop.time()
            self._on_idle(self)
        elif not self.closed:
            self.abort()

    def _feed(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if self._state == _HEAD:
            data = self._feed_head(data)
            if not data:
                return
            if self._state == _DONE:
                self.abort()  # bytes after a bodiless message: the framing is off
                return
        state = self._state
        if state == _LENGTH:
            self._feed_length(data)
        elif state == _UNTIL_CLOSE:
            self._deliver([data])
        else:
            self._feed_chunked(data)

    def _feed_head(self, data: bytes) -> bytes:
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD:
                    raise MalformedResponse("upstream response headers are too large")
                self._tail = data
                return b""
            if end > MAX_HEAD:
                raise MalformedResponse("upstream response headers are too large")
            status, http11, headers = parse_head(data[:end])
            data = data[end + 4 :]
            if 100 <= status < 200:
                if status == 101:
                    raise MalformedResponse("upstream switched protocols unasked")
                continue  # 100 Continue, 103 Early Hints: the real head follows
            self._start_body(status, http11, headers)
            return data

    def _start_body(self, status: int, http11: bool, headers: dict[str, str]) -> None:
        conn = headers.get("connection", "").lower()
        if (not http11 and "keep-alive" not in conn) or "close" in conn:
            self._reusable = False
        keepalive = headers.get("keep-alive")
        if keepalive:
            for part in keepalive.split(","):
                key, _, value = part.strip().partition("=")
                value = value.strip()
                # isascii: str.isdigit() is true for "²", which float() rejects.
                if key.lower() == "timeout" and value.isascii() and value.isdigit():
                    self.keepalive = float(value)
        coding = headers.get("content-encoding", "").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            self._decoder = Decoder(coding)
        elif coding not in ("", "identity"):
            raise MalformedResponse(f"upstream sent an unsupported content coding ({coding})")
        transfer = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if status in (204, 304):
            self._state = _DONE
        elif transfer is not None:
            # Only `chunked` alone: a coding before it (`gzip, chunked`) would reach the
            # consumer still encoded.
            if transfer.strip(" \t").lower() != "chunked":
                raise MalformedResponse("upstream sent an unsupported transfer coding")
            if length is not None:
                self._reusable = False  # both framings given: do not trust what follows
            self._state = _CHUNK_SIZE
            self._trailer_bytes = 0
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            value = values.pop()
            if values or not (value.isascii() and value.isdigit()) or len(value) > 15:
                raise MalformedResponse("upstream sent an invalid Content-Length")
            self._remaining = int(value)
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self._state = _UNTIL_CLOSE
            self._reusable = False
        response = Response(self, status, headers)
        self.response = response
        # Headers are in: from here silence is the idle timeout's (set by the adapter).
        waiter, self._headers_waiter = self._headers_waiter, None
        if self._state == _DONE:
            self._message_done()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _feed_length(self, data: bytes) -> None:
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            self._deliver([data])
            return
        if len(data) > remaining:
            self._reusable = False  # more than the message: the framing is off
            data = data[:remaining]
        self._remaining = 0
        self._deliver([data])
        self._message_done()

    def _feed_chunked(self, data: bytes) -> None:
        pos, end, out = 0, len(data), []
        state, remaining = self._state, self._remaining
        while pos < end:
            if state == _CHUNK_DATA:
                avail = end - pos
                if avail <= remaining:
                    out.append(data[pos:] if pos else data)
                    remaining -= avail
                    pos = end
                    if remaining == 0:
                        state = _CHUNK_END
                    break
                out.append(data[pos : pos + remaining])
                pos += remaining
                remaining = 0
                state = _CHUNK_END
            elif state == _CHUNK_SIZE:
                nl = data.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_LINE:
                        raise MalformedResponse("upstream sent an invalid chunk size")
                    break
                digits = data[pos:nl].split(b";", 1)[0].rstrip(b" \t")
                if not digits or len(digits) > 15 or not _HEX.issuperset(digits):
                    raise MalformedResponse("upstream sent an invalid chunk size")
                remaining = int(digits, 16)
                pos = nl + 2
                state = _CHUNK_DATA if remaining else _TRAILERS
            elif state == _CHUNK_END:
                if end - pos < 2:
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise MalformedResponse("upstream sent a malformed chunk")
                pos += 2
                state = _CHUNK_SIZE
            else:  # _TRAILERS: header lines up to an empty one, ignored
                nl = data.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_LINE:
                        raise MalformedResponse("upstream sent invalid trailers")
                    break
                self._trailer_bytes += nl - pos
                if self._trailer_bytes > MAX_TRAILERS:
                    raise MalformedResponse("upstream sent invalid trailers")
                if nl == pos:
                    pos += 2
                    if pos < end:
                        self._reusable = False
                    self._state = _DONE
                    if out:
                        self._deliver(out)
                    self._message_done()
                    return
                pos = nl + 2
        self._state, self._remaining = state, remaining
        if pos < end:
            self._tail = data[pos:]
        if out:
            self._deliver(out)

    def _deliver(self, parts: list[bytes]) -> None:
        response = self.response
        if response is None:
            return
        decoder = self._decoder
        if decoder is not None:
            decoded = decoder.feed(b"".join(parts))
            if decoder.pending:
                self.pause_reading()  # the rest is decoded as the consumer reads
            if not decoded:
                return
            parts = [decoded]
        response._feed(parts)


class Response:
    """An upstream response: status and headers, then the body as it arrives."""

    def __init__(self, conn: Connection, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self._conn: Connection | None = conn
        self._parts: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._exc: UpstreamHTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the connection -----------------------------------------------------------

    def _feed(self, parts: list[bytes]) -> None:
        self._parts.extend(parts)
        for part in parts:
            self._buffered += len(part)
        if self._buffered > HIGH_WATER and self._conn is not None:
            self._conn.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._eof = True
        self._conn = None  # the connection is the pool's again
        self._wake()

    def _set_exception(self, exc: UpstreamHTTPError) -> None:
        self._exc = exc
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- for the adapter -----------------------------------------------------------------

    def set_read_timeout(self, seconds: float) -> None:
        """Bound the silence between body bytes (the target's idle timeout)."""
        if self._conn is not None:
            self._conn.set_read_timeout(seconds)

    def at_eof(self) -> bool:
        """True once the whole body arrived and was read."""
        return self._eof and not self._parts

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last call; b"" at the end of the body."""
        while True:
            parts = self._parts
            if parts:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                self._parts = []
                self._buffered = 0
                conn = self._conn
                if conn is not None and conn._paused:
                    conn.resume_reading()
                return data
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first `limit` bytes (the rest is then not read).

        A whole body over `MAX_BODY` (decoded) raises `MalformedResponse`."""
        parts: list[bytes] = []
        size = 0
        while limit is None or size < limit:
            data = await self.readany()
            if not data:
                break
            parts.append(data)
            size += len(data)
            if limit is None and size > MAX_BODY:
                self.close()
                raise MalformedResponse(
                    f"upstream response body is too large (over {MAX_BODY >> 20} MiB)"
                )
        body = b"".join(parts)
        return body if limit is None else body[:limit]

    def close(self) -> None:
        """Done with the response: a body not read whole costs the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
