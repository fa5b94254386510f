"""The admin API under `/v1/kt/`: audit events for the console and for operators.

Protected by the admin key of the config (`admin.key`), sent as the bearer token or
as `x-kt-admin-key`; without a configured key the admin API answers 404. Reads go
through the same store `kt audit query` opens, in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ktproxy.audit.sink import AuditSink, Page, Query
from ktproxy.audit.store import (
    audit_options,
    check_cursor,
    open_sinks,
    parse_time,
    query_sinks,
    reader_sink,
)
from ktproxy.consumers import key_digest
from ktproxy.errors import GatewayError, bad_request
from ktproxy.runtime import Runtime
from ktproxy.state import STATE

log = logging.getLogger("ktproxy.api")
MAX_LIMIT = 1000
T = TypeVar("T")


def admin_runtime(request: web.Request) -> Runtime:
    """The current runtime, once the request proved it holds the admin key."""
    runtime = request.app[STATE].runtime
    if runtime is None:
        raise GatewayError(503, "The gateway is not ready.", type="server_error")
    if runtime.admin_key is None:
        raise GatewayError(
            404,
            "The admin API is disabled: set admin.key in the policy config.",
            type="invalid_request_error",
            code="admin_disabled",
        )
    presented = request.headers.get("x-kt-admin-key")
    if presented is None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else None
    if not presented or not hmac.compare_digest(
        key_digest(presented).encode(), runtime.admin_key.encode()
    ):
        raise GatewayError(
            401, "A valid admin key is required.", type="invalid_request_error",
            code="invalid_admin_key",
        )  # fmt: skip
    return runtime


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise bad_request(f"`{name}` must be true or false; got {value!r}", param=name)


def query_from(params: Any) -> Query:
    """A `Query` from URL parameters; 400 on a bad value."""
    fields: dict[str, Any] = {}
    for name in ("consumer", "model", "target", "decision", "request_id", "cursor"):
        if params.get(name):
            fields[name] = params[name]
    if params.get("q", "").strip():  # request-id search; text that is not hex finds nothing
        fields["search"] = params["q"].strip()
    for name in ("since", "until"):
        if params.get(name):
            try:
                fields[name] = parse_time(params[name])
            except ValueError as exc:
                raise bad_request(str(exc), param=name) from None
    if params.get("status"):
        try:
            fields["status"] = int(params["status"])
        except ValueError:
            raise bad_request("`status` must be an HTTP status code", param="status") from None
    if params.get("streamed"):
        fields["streamed"] = _flag(params["streamed"], "streamed")
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise bad_request(f"`limit` must be 1..{MAX_LIMIT}", param="limit")
        fields["limit"] = limit
    try:
        check_cursor(fields.get("cursor"))
    except ValueError:
        raise bad_request("`cursor` is not a cursor of this API", param="cursor") from None
    return Query(**fields)


def read_store(runtime: Runtime, read: Callable[[list[AuditSink]], T]) -> T:
    """`read` over the audit store the config names, opened for this call (run it in a
    worker thread); 404 without an audit store, 503 while it cannot be read."""
    options = audit_options(runtime.loaded)
    if options is None:
        raise GatewayError(
            404,
            "No audit store: audit-logger is not in any policy chain.",
            type="invalid_request_error",
            code="audit_disabled",
        )
    try:
        if options.sink == "postgres":  # one table for the fleet: keep its connection
            key = ("postgres", msgspec.json.encode(options))
            return read([runtime.resources.audit_reader(key, lambda: reader_sink(options))])
        sinks = open_sinks(options)  # files: opened per call, as they are at their path now
        try:
            return read(sinks)
        finally:
            for sink in sinks:
                sink.close()
    except (OSError, RuntimeError) as exc:  # PostgreSQL away, a store that cannot open
        log.warning("audit store cannot be read: %s", exc)
        raise GatewayError(
            503,
            "The audit store cannot be read right now; records are kept and appear "
            "once it is back.",
            type="server_error",
            code="audit_store_unavailable",
            headers={"Retry-After": "5"},
        ) from None


def _read(runtime: Runtime, query: Query) -> Page:
    return read_store(runtime, lambda sinks: query_sinks(sinks, query) if sinks else Page())


async def list_events(request: web.Request) -> web.Response:
    """`GET /v1/kt/events`: audit records, newest first, filtered, one page."""
    runtime = admin_runtime(request)
    page = await asyncio.to_thread(_read, runtime, query_from(request.query))
    body = {
        "object": "list",
        "data": msgspec.to_builtins(page.records),
        "next_cursor": page.next_cursor,
        "has_more": page.next_cursor is not None,
    }
    return web.json_response(body, dumps=lambda o: msgspec.json.encode(o).decode())


async def get_event(request: web.Request) -> web.Response:
    """`GET /v1/kt/events/{id}`: one exchange's record."""
    runtime = admin_runtime(request)
    query = Query(request_id=request.match_info["id"], limit=1)
    page = await asyncio.to_thread(_read, runtime, query)
    if not page.records:
        raise GatewayError(
            404, "No audit record with this id.", type="invalid_request_error",
            code="event_not_found",
        )  # fmt: skip
    return web.json_response(
        msgspec.to_builtins(page.records[0]), dumps=lambda o: msgspec.json.encode(o).decode()
    )
