"""The audit store a config describes, opened for reading: CLI and admin API.

The gateway writes through `audit-logger`'s writer; `kt audit ...` and
`GET /v1/kt/events` read the same sink(s) from the config. A JSON-lines path with
`{instance}` names one file per gateway instance: every matching file is read. The
PostgreSQL sink keeps every instance's chain in one table.
"""

from __future__ import annotations

import glob
import heapq
import re
import time
from datetime import datetime
from typing import Any

from ktproxy.audit.record import AuditRecord
from ktproxy.audit.sink import AuditSink, Page, Query
from ktproxy.audit.sqlite_sink import decode_cursor, encode_cursor
from ktproxy.audit.stats import Tally
from ktproxy.configcheck import LoadedConfig
from ktproxy.policies.audit_logger import NAME, AuditOptions, make_sink, path_template


def audit_options(loaded: LoadedConfig) -> AuditOptions | None:
    """The `audit-logger` options of the config, when any chain uses it."""
    config = loaded.config
    chains = [config.policies.chain] + [g.chain or [] for g in config.consumers.groups]
    if not any(NAME in chain for chain in chains):
        return None
    options = loaded.policy_options.get(NAME)
    return options if isinstance(options, AuditOptions) else AuditOptions()


# `<live path>.<YYYYmmddTHHMMSS.ffffff>.rotated`, as `JSONLSink` names rotated files.
_ROTATED = re.compile(r"^(.*)\.\d{8}T\d{6}\.\d{6}\.rotated$")


def reader_sink(options: AuditOptions) -> AuditSink:
    """The PostgreSQL sink `options` name, for reading (no spool), not yet opened."""
    return make_sink(options, None)


def open_sinks(options: AuditOptions) -> list[AuditSink]:
    """Every sink file the options name (several for a `{instance}` JSON-lines path)."""
    template = path_template(options)
    if options.sink == "postgres":  # one table holds every instance's chain
        sink = reader_sink(options)
        sink.open()
        return [sink]
    if "{instance}" in template:
        pattern = glob.escape(template).replace(glob.escape("{instance}"), "*")
        live = set(glob.glob(pattern))
        # An instance whose live file was just rotated away has only rotated files.
        for rotated in glob.glob(pattern + ".*.rotated"):
            match = _ROTATED.match(rotated)
            if match:
                live.add(match[1])
        paths = sorted(live)
    else:
        paths = [template]
    sinks = [make_sink(options, p) for p in paths]
    for sink in sinks:
        sink.open()
    return sinks


def query_sinks(sinks: list[AuditSink], query: Query) -> Page:
    """`query` over several sinks, merged newest first, with one cursor for all."""
    if len(sinks) == 1:
        return sinks[0].query(query)
    pages = [s.query(query).records for s in sinks]
    key = lambda r: (r.ts, r.chain, r.seq)  # noqa: E731
    merged = list(heapq.merge(*pages, key=key, reverse=True))
    page = Page(merged[: query.limit])
    if len(merged) > query.limit:
        last = merged[query.limit - 1]
        page.next_cursor = encode_cursor(last.ts, last.chain, last.seq)
    return page


def stats_sinks(sinks: list[AuditSink], query: Query, bucket_s: int) -> Tally:
    """The tally of `query` over several sinks: each store's tally, added up."""
    tally = Tally()
    for sink in sinks:
        tally.merge(sink.stats(query, bucket_s))
    return tally


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> float:
    """Seconds since the epoch from `1700000000`, ISO 8601, or an age like `15m`/`7d`."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _UNITS[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use seconds since the epoch, ISO 8601 or an age like 15m)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()  # local time, as a user typing it means
    return stamp.timestamp()


def check_cursor(cursor: str | None) -> None:
    """ValueError when `cursor` is not one of ours."""
    if cursor is not None:
        decode_cursor(cursor)


def record_summary(record: AuditRecord) -> dict[str, Any]:
    """The columns of `kt audit query`'s table."""
    decisions = ",".join(d.code or f"{d.policy}:{d.action}" for d in record.decisions)
    usage = record.usage.total_tokens if record.usage else None
    return {
        "time": datetime.fromtimestamp(record.ts).strftime("%Y-%m-%d %H:%M:%S"),
        "id": record.id,
        "consumer": record.consumer or "-",
        "model": record.model,
        "status": record.status if record.status is not None else "-",
        "stream": "yes" if record.streamed else "no",
        "ms": f"{record.latency_ms:.1f}" if record.latency_ms is not None else "-",
        "tokens": usage if usage is not None else "-",
        "decisions": decisions or "-",
    }
