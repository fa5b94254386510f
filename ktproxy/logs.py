"""The gateway's logs: one structured line per request, JSON or key=value text.

Every record goes to stderr through one handler on the root logger: JSON lines for
log pipelines, or a concise key=value line for a person at a terminal (`auto` picks
by whether stderr is a terminal). The request line is built from the
`RequestContext` fields that describe an exchange (ids, routing, status, timings,
usage, policy decisions as counts by kind), never from the request: no header, no
key, no prompt or response text and no redacted value can reach a request line.

The request line is on the hot path, so it skips the stdlib's caller lookup (a
stack walk) and costs nothing at all when `ktproxy.requests` is disabled for info.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from typing import Any, Literal, TextIO

import orjson

from ktproxy.context import RequestContext

REQUEST_LOGGER = "ktproxy.requests"
_log = logging.getLogger(REQUEST_LOGGER)
_INFO = logging.INFO

# Only the model name is client-chosen free text; a long one must not make a huge line.
MAX_MODEL_CHARS = 200

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


class RequestLine:
    """The fields of one request line, carried as a log record's message.

    The gateway's formatters read `fields`; any other formatter (a test's capture,
    an embedding application's own logging config) gets the key=value text from
    `str()`, so the record is useful however logging is set up.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return text_fields(self.fields)


def request_fields(ctx: RequestContext, now: float | None = None) -> dict[str, Any]:
    """The request line's fields for the exchange in `ctx`, as it stands at `now`
    (`time.perf_counter()`; default: now).

    Called from the pipeline's `finally:`, so an exception on its way out is in
    `sys.exc_info()`: when nothing turned it into a status or an error code (the error
    middleware will answer 500), its class name is the error, so the line still says
    what happened.
    """
    if now is None:
        now = time.perf_counter()
    status, error = ctx.status, ctx.error_code
    if status is None and error is None:
        exc = sys.exc_info()[1]
        if exc is not None:
            status, error = 500, type(exc).__name__
    usage = ctx.usage
    model: str | None = ctx.model or None  # empty: refused before the body was read
    if model is not None and len(model) > MAX_MODEL_CHARS:
        model = model[:MAX_MODEL_CHARS] + "…"
    return {
        "request_id": ctx.request_id,
        "endpoint": ctx.endpoint,
        "consumer": ctx.consumer,
        "model": model,
        "target": ctx.target_id,
        "provider": ctx.provider,
        "upstream_model": ctx.upstream_model,
        "status": status,
        "latency_ms": round((now - ctx.started) * 1000, 3),
        "upstream_ms": ctx.upstream_ms,
        "ttft_ms": ctx.ttft_ms,
        "streamed": ctx.stream,
        # Only the three counts: a provider's usage object may carry anything else.
        "usage": None
        if not isinstance(usage, dict)
        else {
            "prompt_tokens": _int(usage.get("prompt_tokens")),
            "completion_tokens": _int(usage.get("completion_tokens")),
            "total_tokens": _int(usage.get("total_tokens")),
        },
        "attempts": len(ctx.attempts),
        "error": error,
        "decisions": [
            {"policy": d.policy, "action": d.action, "code": d.code, "counts": dict(d.detail)}
            for d in ctx.decisions
        ],
    }


def log_request(ctx: RequestContext) -> None:
    """Log the request line of `ctx` at info on `ktproxy.requests`; never raises.

    Called once per request, after the `on_complete` hooks, so the line has what the
    audit record has. A failure here is logged and swallowed: a log line never fails
    a request.
    """
    if not _log.isEnabledFor(_INFO):
        return
    try:
        # makeRecord + handle instead of info(): info() walks the stack for the caller.
        record = _log.makeRecord(
            REQUEST_LOGGER, _INFO, __file__, 0, RequestLine(request_fields(ctx)), (), None
        )
        _log.handle(record)
    except Exception:
        with contextlib.suppress(Exception):
            logging.getLogger("ktproxy.logs").exception("could not log request %s", ctx.request_id)


# -- formatters ------------------------------------------------------------------------


class _IsoClock:
    """UTC ISO 8601 timestamps with milliseconds; the seconds part is cached."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `pid`, `msg`, then the request
    line's fields (always all of them, null when unknown) or `exc` for a traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _IsoClock()

    def format(self, record: logging.LogRecord) -> str:
        head = {
            "ts": self._clock(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        msg = record.msg
        if isinstance(msg, RequestLine):
            head["msg"] = "request"
            obj = head | msg.fields
        else:
            head["msg"] = record.getMessage()
            obj = head
            if record.exc_info:
                obj["exc"] = self.formatException(record.exc_info)
            elif record.exc_text:
                obj["exc"] = record.exc_text
            if record.stack_info:
                obj["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(obj, default=str, option=_JSON_OPTIONS).decode()


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL logger: message` (local time), a traceback on the lines after.

    Request lines are `key=value` pairs, unknown values (and `streamed` when false)
    left out, so one fits a terminal line; values with spaces, quotes or `=` are
    JSON-quoted, so a client's model name cannot forge a line or a field.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._clock = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._clock = second, time.strftime("%H:%M:%S", time.localtime(second))
        line = (
            f"{self._clock}.{int(record.msecs):03d} {record.levelname} {record.name}: "
            f"{record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


_BARE = re.compile(r"[\w.:/@+,;()-]+", re.ASCII)
# Free-text fields (names from the config or the client) are quoted when needed; the
# others are ids, numbers and booleans made by the gateway.
_QUOTED = ("consumer", "model", "target")
_NUMBERS = (("status", "status"), ("latency_ms", "ms"), ("upstream_ms", "upstream_ms"))


def text_fields(fields: dict[str, Any]) -> str:
    """The request line as `key=value` text (what a terminal shows), unknowns left out."""
    parts = [f"id={fields['request_id']}", f"endpoint={fields['endpoint']}"]
    for name in _QUOTED:
        value = fields[name]
        if value is not None:
            parts.append(f"{name}={_text_value(value)}")
    for name, key in _NUMBERS:
        value = fields[name]
        if value is not None:
            parts.append(f"{key}={value}")
    if fields["streamed"]:
        parts.append("streamed=true")
        if fields["ttft_ms"] is not None:
            parts.append(f"ttft_ms={fields['ttft_ms']}")
    usage = fields["usage"]
    if usage:
        for name in ("prompt_tokens", "completion_tokens"):
            if usage[name] is not None:
                parts.append(f"{name}={usage[name]}")
    parts.append(f"attempts={fields['attempts']}")
    if fields["error"] is not None:
        parts.append(f"error={_text_value(fields['error'])}")
    if fields["decisions"]:
        parts.append("decisions=" + _text_value(";".join(map(_text_decision, fields["decisions"]))))
    return " ".join(parts)


def _text_decision(decision: dict[str, Any]) -> str:
    """`policy:action[:code][(KIND:n,...)]`."""
    out = f"{decision['policy']}:{decision['action']}"
    if decision.get("code"):
        out += f":{decision['code']}"
    counts = decision.get("counts")
    if counts:
        out += "(" + ",".join(f"{k}:{v}" for k, v in counts.items()) + ")"
    return out


def _text_value(value: object) -> str:
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return orjson.dumps(text).decode()  # quotes and escapes spaces, `=`, newlines


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- setup -----------------------------------------------------------------------------


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "text"]:
    """`json` or `text` for `fmt` (`auto`, `json` or `text`): `auto` is text when
    `stream` is a terminal, JSON lines otherwise."""
    if fmt == "json":
        return "json"
    if fmt == "text":
        return "text"
    if fmt != "auto":
        raise ValueError(f"log format must be auto, json or text; got {fmt!r}")
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "json"


def setup_logging(
    level: str, fmt: str = "auto", stream: TextIO | None = None
) -> Literal["json", "text"]:
    """Send every log record (the gateway's, aiohttp's, asyncio's) at `level` and above to
    `stream` (default stderr) in format `fmt` (auto, json or text); returns the format
    chosen.

    Replaces whatever handlers the root logger had, so calling it again reconfigures;
    forked workers inherit the handler (the JSON lines' `pid` tells them apart).
    """
    stream = sys.stderr if stream is None else stream
    resolved = resolve_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if resolved == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return resolved
