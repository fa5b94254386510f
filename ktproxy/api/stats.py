"""`GET /v1/kt/stats`: the console's overview, from the audit store and the metrics.

Counts, latency quantiles and rankings over a window come from the audit store the
config names (aggregated inside the store where it is SQL, see `ktproxy.audit.stats`);
the per-chunk policy time comes from this gateway's metrics history
(`ktproxy.metrics_timeline`), which starts with the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import msgspec
from aiohttp import web

from ktproxy.api.admin import admin_runtime, query_from, read_store
from ktproxy.audit.sink import Query
from ktproxy.audit.stats import (
    BUCKET_LIMIT,
    Stats,
    bucket_count,
    bucket_start,
    choose_bucket,
    finish,
)
from ktproxy.audit.store import stats_sinks
from ktproxy.errors import bad_request
from ktproxy.metrics_timeline import CHUNK_TIMELINE
from ktproxy.runtime import Runtime

log = logging.getLogger("ktproxy.api")
DEFAULT_WINDOW = 3600.0
MIN_BUCKET, MAX_BUCKET = 10, 86400
_IGNORED = ("cursor", "limit", "request_id", "q")  # paging and search: events only


def window(params: Any, now: float) -> tuple[Query, int]:
    """The filters, window and bucket of a stats request; 400 on a bad value."""
    query = query_from({k: v for k, v in params.items() if k not in _IGNORED})
    since = query.since if query.since is not None else now - DEFAULT_WINDOW
    until = query.until if query.until is not None else now
    if since >= until:
        raise bad_request("`since` must be before `until`", param="since")
    raw = params.get("bucket")
    if raw:
        try:
            bucket_s = int(raw)
        except ValueError:
            bucket_s = 0
        if not MIN_BUCKET <= bucket_s <= MAX_BUCKET:
            raise bad_request(
                f"`bucket` must be whole seconds, {MIN_BUCKET}..{MAX_BUCKET}", param="bucket"
            )
        if bucket_count(since, until, bucket_s) > BUCKET_LIMIT:
            raise bad_request(
                f"`bucket` {bucket_s} gives more than {BUCKET_LIMIT} buckets over this window",
                param="bucket",
            )
    else:
        bucket_s = choose_bucket(since, until)
    return dataclasses.replace(query, since=since, until=until), bucket_s


def _read(runtime: Runtime, query: Query, bucket_s: int) -> Stats:
    assert query.since is not None and query.until is not None
    tally = read_store(runtime, lambda sinks: stats_sinks(sinks, query, bucket_s))
    return finish(tally, query.since, query.until, bucket_s)


async def get_stats(request: web.Request) -> web.Response:
    """`GET /v1/kt/stats`: totals, a zero-filled series, rankings, chunk timing."""
    runtime = admin_runtime(request)
    query, bucket_s = window(request.query, time.time())
    stats = await asyncio.to_thread(_read, runtime, query, bucket_s)
    chunks = request.app[CHUNK_TIMELINE].series(
        bucket_start(stats.since, bucket_s), len(stats.series), bucket_s
    )
    body = {"object": "stats", **msgspec.to_builtins(stats), "chunk_policy_us": chunks}
    return web.json_response(body, dumps=lambda o: msgspec.json.encode(o).decode())
