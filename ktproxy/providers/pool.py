"""Pooled upstream sessions: one `aiohttp.ClientSession` per upstream origin.

Opening a TCP (and TLS) connection per request would dominate the gateway's added
latency, so every target that shares an origin shares one session with keep-alive,
a bounded connector and a DNS cache. The app's cleanup context owns the pool.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from ktproxy import __version__

USER_AGENT = f"ktproxy/{__version__}"


def origin_of(url: str) -> str:
    """`https://api.example.com:443/x/v1` -> `https://api.example.com:443`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class SessionPool:
    """Client sessions keyed by origin, created on demand inside the running loop."""

    def __init__(self, *, keepalive_timeout: float = 60.0, dns_ttl: int = 300) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._keepalive_timeout = keepalive_timeout
        self._dns_ttl = dns_ttl

    def session_for(self, url: str, max_connections: int) -> aiohttp.ClientSession:
        """The session for `url`'s origin; the first caller's limit sizes its connector."""
        origin = origin_of(url)
        session = self._sessions.get(origin)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=max_connections,
                limit_per_host=0,
                ttl_dns_cache=self._dns_ttl,
                keepalive_timeout=self._keepalive_timeout,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=None),
                # The gateway forwards only what it means to; no cookies between clients.
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
            self._sessions[origin] = session
        return session

    def connections_in_use(self) -> int:
        """Upstream connections currently checked out, over all origins."""
        total = 0
        for session in self._sessions.values():
            connector = session.connector
            if isinstance(connector, aiohttp.TCPConnector):
                total += len(connector._acquired)  # no public counter in aiohttp
        return total

    async def close(self) -> None:
        """Close every session (and so every pooled connection)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
