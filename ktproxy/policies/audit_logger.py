"""`audit-logger`: one tamper-evident record per exchange, written off the hot path.

The record is built in `on_complete`, after the response (or the error) reached the
client, and queued to a background writer (`ktproxy.audit.writer`); the request
never waits for a disk unless `on_overflow: block` says it should. Records carry
decisions with counts, never redacted values. Content is stored only with
`store_content: redacted`, and then as the policies before this one left it: the
messages as sent upstream and the assistant text as the client received it (lint
requires `pii-detector` to come first in the chain).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ktproxy.audit.jsonl_sink import JSONLSink
from ktproxy.audit.record import AuditRecord, Content, PolicyDecision, UpstreamAttempt, Usage
from ktproxy.audit.sink import AuditSink
from ktproxy.audit.sqlite_sink import SQLiteSink
from ktproxy.audit.writer import AuditWriter
from ktproxy.config import SecretRef
from ktproxy.context import RequestContext
from ktproxy.policies.base import Policy, StreamFilter
from ktproxy.policies.resources import PolicyResources

NAME = "audit-logger"
_CONTENT = "audit-logger.content"  # ctx.state key: {"request": [...], "response": [...]}


class PostgresOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`sink: postgres`: where the fleet's audit table lives, and the local spool."""

    # The DSN may hold a password, so it comes from the environment.
    dsn_ref: SecretRef
    schema: Annotated[str, Meta(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "ktproxy"
    # Records wait here while PostgreSQL is unreachable; `{instance}` as for `path`.
    spool_path: str = "ktproxy-audit-spool-{instance}.jsonl"
    # Beyond this size, records are dropped and counted (ktproxy_audit_records_total).
    spool_max_bytes: Annotated[int, Meta(ge=4096)] = 256 << 20
    connect_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 5.0


class AuditOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options of `audit-logger`."""

    sink: Literal["sqlite", "jsonl", "postgres"] = "sqlite"
    # Default: ktproxy-audit.db (sqlite), ktproxy-audit-{instance}.jsonl (jsonl).
    # `{instance}` is replaced by the gateway instance name.
    path: str | None = None
    postgres: PostgresOptions | None = None
    store_content: Literal["none", "redacted"] = "none"
    # Longest assistant text stored per record (a stream may run on without end).
    max_content_chars: Annotated[int, Meta(ge=1024)] = 1 << 20
    retention_days: Annotated[float, Meta(gt=0)] | None = 30.0
    queue_size: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    batch_size: Annotated[int, Meta(ge=1, le=100_000)] = 256
    flush_interval_ms: Annotated[float, Meta(gt=0)] = 200.0
    on_overflow: Literal["drop", "block"] = "drop"
    # block: longest wait for room in the queue; then the record is dropped and counted.
    block_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 5.0
    purge_interval_s: Annotated[float, Meta(gt=0)] = 3600.0
    # jsonl: rotate the live file past this size, keep this many rotated files
    max_file_bytes: Annotated[int, Meta(ge=4096)] = 64 << 20
    keep_files: Annotated[int, Meta(ge=1)] = 100

    def __post_init__(self) -> None:
        if self.sink == "postgres" and self.postgres is None:
            raise ValueError("sink: postgres needs `postgres: {dsn_ref: {env: NAME}}`")
        if self.sink == "postgres" and self.path is not None:
            raise ValueError("sink: postgres has no `path`; its spool is `postgres.spool_path`")


def path_template(options: AuditOptions) -> str:
    """The configured path, or the sink's default; may contain `{instance}`. For
    PostgreSQL, the local spool's path."""
    if options.postgres is not None and options.sink == "postgres":
        return options.postgres.spool_path
    default = "ktproxy-audit.db" if options.sink == "sqlite" else "ktproxy-audit-{instance}.jsonl"
    return options.path or default


def sink_path(options: AuditOptions, instance: str) -> str:
    """Where the sink of `options` writes, for this instance."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in instance)
    return path_template(options).replace("{instance}", safe)


def _sqlite(options: AuditOptions, path: str | None) -> AuditSink:
    assert path is not None
    return SQLiteSink(path)


def _jsonl(options: AuditOptions, path: str | None) -> AuditSink:
    assert path is not None
    return JSONLSink(path, options.max_file_bytes, options.keep_files)


def _postgres(options: AuditOptions, path: str | None) -> AuditSink:
    # Imported here: asyncpg is only needed when this sink is configured.
    from ktproxy.audit.postgres_sink import PostgresSink

    pg = options.postgres
    assert pg is not None
    template = pg.spool_path
    return PostgresSink(
        os.environ.get(pg.dsn_ref.env),
        pg.schema,
        spool_path=path,
        spool_max_bytes=pg.spool_max_bytes,
        spool_pattern=template.replace("{instance}", "*") if "{instance}" in template else None,
        connect_timeout=pg.connect_timeout_s,
        dsn_source=f"environment variable {pg.dsn_ref.env} (postgres.dsn_ref)",
    )


# `sink:` → the factory of that sink, given the options and the path it writes (None:
# a reader's sink, e.g. `kt audit query` on PostgreSQL, which needs no local file).
SINKS: dict[str, Callable[[AuditOptions, str | None], AuditSink]] = {
    "sqlite": _sqlite,
    "jsonl": _jsonl,
    "postgres": _postgres,
}


def make_sink(options: AuditOptions, path: str | None) -> AuditSink:
    """The sink `options` describe, at `path` (its file, or its spool)."""
    return SINKS[options.sink](options, path)


TRUNCATED = " [truncated]"


class _Collect:
    """Pass-through stream filter that keeps what the client received, up to `left`
    characters (then a `TRUNCATED` mark)."""

    __slots__ = ("parts", "left")

    def __init__(self, parts: list[str], left: int) -> None:
        self.parts = parts
        self.left = left

    def feed(self, text: str) -> str:
        if self.left > 0:
            self.parts.append(text[: self.left])
            self.left -= len(text)
            if self.left <= 0:
                self.parts.append(TRUNCATED)
        return text

    def flush(self) -> str:
        return ""


class AuditLogger(Policy):
    """Writes one audit record per exchange."""

    name = NAME
    Options = AuditOptions

    def __init__(self, options: AuditOptions) -> None:
        super().__init__(options)
        self.store = options.store_content == "redacted"
        self.writer: AuditWriter | None = None

    def enabled_hooks(self) -> frozenset[str]:
        hooks = {"on_complete"}
        if self.store:
            hooks |= {"on_request", "on_response", "stream_filter"}
        return frozenset(hooks)

    async def start(self, resources: PolicyResources) -> None:
        o = self.options
        path = sink_path(o, resources.instance)
        self.writer = await resources.audit_writer(
            o.sink,
            path,
            lambda: AuditWriter(
                make_sink(o, path),
                resources.instance,
                queue_size=o.queue_size,
                batch_size=o.batch_size,
                flush_interval=o.flush_interval_ms / 1000,
                on_overflow=o.on_overflow,
                block_timeout=o.block_timeout_s,
                retention_days=o.retention_days,
                purge_interval=o.purge_interval_s,
            ),
        )

    # -- content (store_content: redacted) ----------------------------------------

    def _content(self, ctx: RequestContext) -> dict[str, Any]:
        content = ctx.state.get(_CONTENT)
        if content is None:
            content = ctx.state[_CONTENT] = {"request": None, "response": []}
        return content

    def on_request(self, ctx: RequestContext) -> None:
        messages = ctx.body.get("messages")
        if isinstance(messages, list):
            self._content(ctx)["request"] = [m for m in messages if isinstance(m, dict)]

    def on_response(self, ctx: RequestContext, body: dict[str, Any]) -> bool:
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                _Collect(self._content(ctx)["response"], self.options.max_content_chars).feed(
                    message["content"]
                )
        return False

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> StreamFilter | None:
        if choice_index != 0:
            return None
        return _Collect(self._content(ctx)["response"], self.options.max_content_chars)

    # -- the record --------------------------------------------------------------

    def record(self, ctx: RequestContext, now: float) -> AuditRecord:
        """The record of the exchange in `ctx`, as it stands at `now` (perf_counter)."""
        usage = None
        if isinstance(ctx.usage, dict):
            usage = Usage(
                _int(ctx.usage.get("prompt_tokens")),
                _int(ctx.usage.get("completion_tokens")),
                _int(ctx.usage.get("total_tokens")),
            )
        content = None
        if self.store and _CONTENT in ctx.state:
            saved = ctx.state[_CONTENT]
            content = Content(saved["request"], "".join(saved["response"]) or None)
        return AuditRecord(
            id=ctx.request_id,
            ts=ctx.ts,
            endpoint=ctx.endpoint,
            model=ctx.model,
            streamed=ctx.stream,
            status=ctx.status,
            error=ctx.error_code,
            consumer=ctx.consumer,
            target=ctx.target_id,
            provider=ctx.provider,
            upstream_model=ctx.upstream_model,
            latency_ms=round((now - ctx.started) * 1000, 3),
            upstream_ms=ctx.upstream_ms,
            ttft_ms=ctx.ttft_ms,
            usage=usage,
            decisions=[
                PolicyDecision(d.policy, d.action, d.code, dict(d.detail)) for d in ctx.decisions
            ],
            attempts=[UpstreamAttempt(a.target, a.outcome, a.status, a.ms) for a in ctx.attempts],
            content=content,
        )

    async def on_complete(self, ctx: RequestContext) -> None:
        if self.writer is None:
            raise RuntimeError("audit-logger used before its runtime was started")
        await self.writer.put(self.record(ctx, time.perf_counter()))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
