"""Server-sent events framing: incremental splitting and the `data:` payload.

Upstream bytes arrive at arbitrary boundaries — an event may be split across reads
and one read may carry several events. `SSEParser` returns whole events with their
original bytes (terminator included) so that an event no policy changes is written
on exactly as it came. An unfinished event is held up to `MAX_EVENT_BYTES`; an
upstream that goes past that without ending it fails the stream (502).
"""

from __future__ import annotations

from ktproxy.errors import GatewayError

MAX_EVENT_BYTES = 8 * 1024 * 1024  # one SSE event (real ones are a few hundred bytes)


class SSEParser:
    """Splits a byte stream into whole SSE events (each ending with a blank line)."""

    __slots__ = ("_buf", "_crlf", "_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._crlf = False  # set once the stream showed a CR: line ends are normalised
        self._cr = b""  # a trailing CR whose LF may arrive with the next read

    @property
    def idle(self) -> bool:
        """No bytes of an unfinished event are held: the next read starts a new event."""
        return not (self._buf or self._cr)

    def feed(self, data: bytes) -> list[bytes]:
        """Events completed by `data`, in order; a partial event is kept for later."""
        if self._crlf or b"\r" in data:
            self._crlf = True
            data = self._cr + data
            self._cr = b""
            if data.endswith(b"\r"):
                data, self._cr = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._buf:
            buf = self._buf + data
        else:
            # The common case: a read holding exactly one whole event.
            first = data.find(b"\n\n")
            if first >= 0 and first == len(data) - 2:
                return [data]
            buf = data
        events: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            events.append(buf[start : end + 2])
            start = end + 2
        self._buf = buf[start:] if start < len(buf) else b""
        if len(self._buf) > MAX_EVENT_BYTES:
            self._buf = b""
            raise GatewayError(
                502,
                f"Upstream sent a stream event of more than {MAX_EVENT_BYTES} bytes.",
                type="upstream_error",
                code="upstream_bad_response",
            )
        return events

    def remainder(self) -> bytes:
        """Bytes of an unfinished event (for the end of a truncated stream)."""
        buf, self._buf, self._cr = self._buf + self._cr, b"", b""
        return buf


def event_data(event: bytes) -> bytes | None:
    """The `data` payload of one event (lines joined by newline), None if it has none.

    The common case — a single `data: ...` line — is one prefix test and a slice.
    """
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
        return event[6:-2]
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None


def data_event(payload: bytes) -> bytes:
    """One SSE event carrying `payload` as its data."""
    return b"data: " + payload + b"\n\n"


DONE = b"[DONE]"
