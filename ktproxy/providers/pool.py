"""Pooled upstream connections: one `OriginPool` per upstream origin.

Opening a TCP (and TLS) connection per request would dominate the gateway's added
latency, so every target that shares an origin shares one pool of keep-alive
connections (`ktproxy.providers.httpclient.Connection`), bounded by the first such
target's `max_connections`. A request beyond the bound waits for a connection (counted
as waiting) under the target's total timeout. Idle connections are reused newest first
and closed once idle longer than the keep-alive time (ours, or the upstream's own
`Keep-Alive: timeout=` when shorter). The app's cleanup context owns the pool.

Failed requests are not retried here: a POST may already have reached the upstream;
retries are the routing layer's decision (`ktproxy.providers.routing`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from ktproxy import __version__
from ktproxy.providers.httpclient import (
    ConnectFailed,
    Connection,
    Response,
    UpstreamTimeout,
    encode_request,
)

USER_AGENT = f"ktproxy/{__version__}"


def origin_of(url: str) -> str:
    """`https://api.example.com:443/x/v1` -> `https://api.example.com:443`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def tls_reason(exc: ssl.SSLError) -> str:
    """A short, client-safe account of a TLS failure ("certificate verify failed:
    certificate has expired", "WRONG_VERSION_NUMBER")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or "unknown reason"
        return f"certificate verify failed: {detail}"
    return str(exc.reason or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One origin's connections at a glance (for `/metrics`)."""

    origin: str
    in_use: int
    idle: int
    waiting: int


class OriginPool:
    """Keep-alive connections to one origin, at most `limit` open at once."""

    def __init__(
        self, origin: str, limit: int, keepalive: float, tls: ssl.SSLContext | None
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.origin = origin
        self.limit = limit
        self.host = parts.hostname
        secure = parts.scheme == "https"
        self.port = parts.port or (443 if secure else 80)
        self._tls = (tls or ssl.create_default_context()) if secure else None
        self._keepalive = keepalive
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = self.port == (443 if secure else 80)
        authority = host if default_port else f"{host}:{self.port}"
        # Sent with every request, ahead of the adapter's own headers.
        self._fixed = (
            f"Host: {authority}\r\nUser-Agent: {USER_AGENT}\r\nAccept-Encoding: gzip, deflate\r\n"
        ).encode("idna" if not authority.isascii() else "ascii")
        self._idle: deque[Connection] = deque()
        self._open = 0  # connected or connecting
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._paths: dict[str, str] = {}
        self._closing = False

    # -- requests ------------------------------------------------------------------------

    async def request(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        *,
        connect: float,
        first_byte: float,
        total: float | None,
    ) -> Response:
        """POST `body` to `url` (on this origin); returns once the response head is in.

        Raises `UpstreamHTTPError` (a timeout naming its phase, a refused or reset
        connection, a malformed response) and `ValueError` for an unsendable header."""
        path = self._paths.get(url)
        if path is None:
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if len(self._paths) < 1024:
                self._paths[url] = path
        data = encode_request("POST", path, self._fixed, headers, body)
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn = self._take_idle(started)
        if conn is None:
            conn = await self._acquire(connect, total)
        if total is not None:
            total -= loop.time() - started
            if total <= 0:
                self._put_back(conn)
                raise UpstreamTimeout("total")
        try:
            return await conn.send(data, first_byte, total)
        except BaseException:
            conn.abort()  # cancelled (the client left) or failed: never reuse it
            raise

    def _take_idle(self, now: float) -> Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            keepalive = (
                self._keepalive
                if conn.keepalive is None
                else min(self._keepalive, max(conn.keepalive - 1.0, 0.0))
            )
            if conn.closed or now - conn.idle_since >= keepalive:
                conn.abort()
                continue
            return conn
        return None

    async def _acquire(self, connect: float, total: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        deadline = None if total is None else loop.time() + total
        while True:
            if self._closing:
                raise ConnectFailed("gateway is shutting down")
            conn = self._take_idle(loop.time())
            if conn is not None:
                return conn
            if self._open < self.limit:
                return await self._connect(connect)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    async with asyncio.timeout_at(deadline):
                        await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    # Woken (a connection or a slot is free) but leaving anyway: cancelled
                    # or timed out in the same loop turn. Pass the turn on, or the next
                    # waiter sleeps while a connection idles.
                    self._wake_one()
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout("total") from None
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    async def _connect(self, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        self._open += 1
        conn = Connection(self._returned, self._lost)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls is not None else None,
                )
        except TimeoutError:
            self._forget_attempt(conn)
            raise UpstreamTimeout("connect") from None
        except ssl.SSLError as exc:
            self._forget_attempt(conn)
            raise ConnectFailed(f"TLS handshake failed ({tls_reason(exc)})") from None
        except OSError as exc:
            self._forget_attempt(conn)
            raise ConnectFailed(f"cannot connect ({exc.strerror or type(exc).__name__})") from None
        except BaseException:
            self._forget_attempt(conn)
            raise
        return conn

    def _forget_attempt(self, conn: Connection) -> None:
        """A connect that never completed: free its slot (no connection_lost follows)."""
        if conn.transport is not None:
            conn.abort()  # connection_lost will free the slot
            return
        conn.closed = True
        self._open -= 1
        self._wake_one()

    # -- connection bookkeeping (called by the connections) -------------------------------

    def _returned(self, conn: Connection) -> None:
        """A connection finished its message with keep-alive: idle until reused."""
        if self._closing:
            conn.abort()
            return
        self._idle.append(conn)
        self._close_expired(conn.idle_since)
        self._wake_one()

    def _put_back(self, conn: Connection) -> None:
        conn.idle_since = asyncio.get_running_loop().time()
        self._returned(conn)

    def _lost(self, conn: Connection) -> None:
        """A connection closed (by either side): its slot is free."""
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._open -= 1
        self._wake_one()

    def _close_expired(self, now: float) -> None:
        idle = self._idle
        while idle and now - idle[0].idle_since >= self._keepalive:
            idle.popleft().abort()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- introspection and shutdown ------------------------------------------------------

    def stats(self) -> PoolStats:
        idle = len(self._idle)
        waiting = sum(1 for w in self._waiters if not w.done())
        return PoolStats(self.origin, self._open - idle, idle, waiting)

    def close(self) -> None:
        """Close every connection; requests still waiting for one fail."""
        self._closing = True
        while self._idle:
            self._idle.pop().abort()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """How an https origin's certificate is checked: `ca_file` (PEM) trusted instead of
    the system store, `verify=False` for no check at all."""

    ca_file: str | None = None
    verify: bool = True


SYSTEM_TLS = TLSSettings()


def tls_context(settings: TLSSettings) -> ssl.SSLContext:
    """A client SSLContext for `settings` (raises `OSError`/`ssl.SSLError` for a bad CA
    file, which lint reports before start)."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class UpstreamPool:
    """Origin pools keyed by origin and TLS settings, created on demand inside the
    running loop (targets sharing an origin but trusting different CAs never share a
    connection)."""

    def __init__(self, *, keepalive_timeout: float = 15.0) -> None:
        self._pools: dict[tuple[str, TLSSettings], OriginPool] = {}
        self._keepalive_timeout = keepalive_timeout
        self._contexts: dict[TLSSettings, ssl.SSLContext] = {}

    def pool_for(
        self, url: str, max_connections: int, tls: TLSSettings | None = None
    ) -> OriginPool:
        """The pool for `url`'s origin and `tls`; the first caller's limit sizes it."""
        origin = origin_of(url)
        settings = SYSTEM_TLS if tls is None else tls
        key = (origin, settings)
        pool = self._pools.get(key)
        if pool is None:
            context = None
            if origin.startswith("https:"):
                context = self._contexts.get(settings)
                if context is None:
                    context = self._contexts[settings] = tls_context(settings)
            pool = OriginPool(origin, max_connections, self._keepalive_timeout, context)
            self._pools[key] = pool
        return pool

    def stats(self) -> list[PoolStats]:
        """Per origin (pools of one origin with different TLS settings summed)."""
        merged: dict[str, PoolStats] = {}
        for pool in self._pools.values():
            s = pool.stats()
            m = merged.get(s.origin)
            merged[s.origin] = (
                s
                if m is None
                else PoolStats(
                    s.origin, m.in_use + s.in_use, m.idle + s.idle, m.waiting + s.waiting
                )
            )
        return list(merged.values())

    def pool_count(self) -> int:
        """How many origin pools exist (one per origin and TLS settings)."""
        return len(self._pools)

    def connections_in_use(self) -> int:
        """Upstream connections currently checked out (or connecting), over all origins."""
        return sum(s.in_use for s in self.stats())

    async def close(self) -> None:
        """Close every pooled connection (those in use close when their exchange ends)."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run
