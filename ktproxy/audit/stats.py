"""Audit statistics: what `GET /v1/kt/stats` answers, and how stores compute it.

Every store reduces the records of a window to a `Tally`: per time bucket, counts and a
latency histogram; per consumer, model and blocking policy, counts. Tallies of several
stores (one JSON-lines file per instance) merge by addition, and `finish` turns the
merged tally into the `Stats` the API returns. SQL stores build their tally with
GROUP BY queries (`sqlite_sink`, `postgres_sink`); `tally_records` builds it from
records in Python: the JSON-lines store uses it, and the tests hold every SQL store
to it.

Latency quantiles are nearest-rank (the k-th smallest value, k = ceil(q * n)) over a
log-scale histogram: bin `i` holds latencies in `[BIN_EDGES[i-1], BIN_EDGES[i])`, the
edges growing by 2 %. A store counts each bin and keeps its smallest latency; the
quantile is the smallest latency of the bin holding the k-th value. It is therefore
an observed latency, never above the exact nearest-rank value and more than 1/1.02 of
it (for latencies of at least `BIN_EDGES[0]`, 1 µs; below that, at most 1 µs under).
Binning by comparison with fixed edges (`bisect` in Python, `width_bucket` in
PostgreSQL) gives every store the same bins bit for bit, so they agree exactly.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from ktproxy.audit.record import AuditRecord
from ktproxy.audit.sink import decision_summary

BIN_GROWTH = 1.02
# Lower edges of latency bins 1.., in milliseconds: 1 µs up to about 3 hours.
BIN_EDGES: tuple[float, ...] = tuple(1e-3 * BIN_GROWTH**i for i in range(1 + 1163))
# `bucket` choices when the request leaves it open, smallest first.
BUCKET_STEPS = (10, 30, 60, 300, 900, 3600, 86400)
MAX_BUCKETS = 120  # default bucket: the smallest step giving at most this many
BUCKET_LIMIT = 10_000  # an explicit bucket giving more is refused
TOP = 10
NONE_NAME = "(none)"


def latency_bin(latency_ms: float) -> int:
    """The histogram bin of a latency (0 below 1 µs)."""
    return bisect_right(BIN_EDGES, latency_ms)


def record_tokens(record: AuditRecord) -> int:
    """Tokens of one exchange: `total_tokens`, else prompt + completion, else 0."""
    usage = record.usage
    if usage is None:
        return 0
    if usage.total_tokens is not None:
        return usage.total_tokens
    return (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)


def blocked_by(record: AuditRecord) -> str | None:
    """The policy that blocked the exchange (the first one, if several said block)."""
    return next((d.policy for d in record.decisions if d.action == "block"), None)


def is_error(record: AuditRecord) -> bool:
    """Failed without a policy block: status >= 400, or an error and no status."""
    if record.blocked:
        return False
    if record.status is not None:
        return record.status >= 400
    return record.error is not None


def bucket_start(ts: float, bucket_s: int) -> int:
    """The start of the bucket holding `ts` (buckets aligned to the epoch), by
    comparison: `ts / bucket_s` rounds up to the next bucket for a `ts` a hair below
    its start, and every store corrects that the same way."""
    k = math.floor(ts / bucket_s)
    return (k - 1 if k * bucket_s > ts else k) * bucket_s


def bucket_count(since: float, until: float, bucket_s: int) -> int:
    """How many aligned buckets `[since, until)` touches."""
    last = until if until <= since else math.nextafter(until, -math.inf)
    return (bucket_start(last, bucket_s) - bucket_start(since, bucket_s)) // bucket_s + 1


def choose_bucket(since: float, until: float) -> int:
    """The smallest step giving at most `MAX_BUCKETS` buckets (else the largest)."""
    for step in BUCKET_STEPS:
        if bucket_count(since, until, step) <= MAX_BUCKETS:
            return step
    return BUCKET_STEPS[-1]


@dataclass(slots=True)
class BucketTally:
    """Counts of one time bucket and its latency histogram `{bin: [count, min ms]}`."""

    requests: int = 0
    blocked: int = 0
    redacted: int = 0
    errors: int = 0
    streamed: int = 0
    tokens: int = 0
    latency: dict[int, list[float]] = field(default_factory=dict)

    def add_latency(self, bin_: int, count: int, smallest: float) -> None:
        """`count` latencies in `bin_`, the smallest being `smallest`."""
        held = self.latency.get(bin_)
        if held is None:
            self.latency[bin_] = [count, smallest]
        else:
            held[0] += count
            held[1] = min(held[1], smallest)

    def merge(self, other: BucketTally) -> None:
        self.requests += other.requests
        self.blocked += other.blocked
        self.redacted += other.redacted
        self.errors += other.errors
        self.streamed += other.streamed
        self.tokens += other.tokens
        for bin_, (count, smallest) in other.latency.items():
            self.add_latency(bin_, int(count), smallest)


@dataclass(slots=True)
class Tally:
    """What a store found in a window; tallies of several stores add up."""

    buckets: dict[int, BucketTally] = field(default_factory=dict)
    consumers: dict[str | None, list[int]] = field(default_factory=dict)  # [requests, blocked]
    models: dict[str, list[int]] = field(default_factory=dict)
    policies: dict[str, int] = field(default_factory=dict)  # blocks by policy

    def bucket(self, start: int) -> BucketTally:
        held = self.buckets.get(start)
        if held is None:
            held = self.buckets[start] = BucketTally()
        return held

    def count(self, table: str, name: str | None, requests: int, blocked: int) -> None:
        """Add to the consumer or model table."""
        rows: dict[str | None, list[int]] = getattr(self, table)
        held = rows.get(name)
        if held is None:
            rows[name] = [requests, blocked]
        else:
            held[0] += requests
            held[1] += blocked

    def merge(self, other: Tally) -> None:
        for start, b in other.buckets.items():
            self.bucket(start).merge(b)
        for name, (requests, blocked) in other.consumers.items():
            self.count("consumers", name, requests, blocked)
        for model, (requests, blocked) in other.models.items():
            self.count("models", model, requests, blocked)
        for policy, n in other.policies.items():
            self.policies[policy] = self.policies.get(policy, 0) + n


def tally_records(records: Iterable[AuditRecord], bucket_s: int) -> Tally:
    """The tally of `records` (already filtered to the window): the reference."""
    tally = Tally()
    for r in records:
        b = tally.bucket(bucket_start(r.ts, bucket_s))
        blocked = r.blocked
        b.requests += 1
        summary = decision_summary(r)
        b.blocked += summary == "blocked"
        b.redacted += summary == "redacted"
        b.errors += is_error(r)
        b.streamed += r.streamed
        b.tokens += record_tokens(r)
        if r.latency_ms is not None:
            b.add_latency(latency_bin(r.latency_ms), 1, r.latency_ms)
        tally.count("consumers", r.consumer, 1, int(blocked))
        tally.count("models", r.model, 1, int(blocked))
        policy = blocked_by(r)
        if policy is not None:
            tally.policies[policy] = tally.policies.get(policy, 0) + 1
    return tally


def quantile(histogram: dict[int, list[float]], q: float) -> float | None:
    """Nearest-rank quantile `q` of a binned histogram (see the module docstring)."""
    n = sum(int(c) for c, _ in histogram.values())
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for bin_ in sorted(histogram):
        count, smallest = histogram[bin_]
        seen += int(count)
        if seen >= rank:
            return smallest
    raise AssertionError("unreachable: rank <= n")


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    blocked: int
    redacted: int
    errors: int
    streamed: int
    tokens: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class Point:
    t: float
    requests: int
    blocked: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class PolicyBlocks:
    policy: str
    blocked: int
    rate: float


@dataclass(frozen=True, slots=True)
class Top:
    name: str
    requests: int
    blocked: int


@dataclass(frozen=True, slots=True)
class Stats:
    """The audit part of `GET /v1/kt/stats` (the chunk timeline is added by the API)."""

    since: float
    until: float
    bucket_s: int
    totals: Totals
    series: list[Point]
    blocks_by_policy: list[PolicyBlocks]
    top_consumers: list[Top]
    top_models: list[Top]


def _top(rows: dict[str | None, list[int]] | dict[str, list[int]]) -> list[Top]:
    named = [(NONE_NAME if k is None else k, v[0], v[1]) for k, v in rows.items()]
    named.sort(key=lambda row: (-row[1], row[0]))
    return [Top(name, requests, blocked) for name, requests, blocked in named[:TOP]]


def finish(tally: Tally, since: float, until: float, bucket_s: int) -> Stats:
    """`Stats` of a merged tally: zero-filled series, totals, rankings."""
    first = bucket_start(since, bucket_s)
    series = []
    whole = BucketTally()
    for i in range(bucket_count(since, until, bucket_s)):
        start = first + i * bucket_s
        b = tally.buckets.get(start) or BucketTally()
        whole.merge(b)
        series.append(
            Point(
                float(start),
                b.requests,
                b.blocked,
                b.errors,
                quantile(b.latency, 0.5),
                quantile(b.latency, 0.99),
            )  # fmt: skip
        )
    totals = Totals(
        whole.requests, whole.blocked, whole.redacted, whole.errors, whole.streamed,
        whole.tokens, quantile(whole.latency, 0.5), quantile(whole.latency, 0.99),
    )  # fmt: skip
    blocks = sorted(tally.policies.items(), key=lambda kv: (-kv[1], kv[0]))
    return Stats(
        since=since,
        until=until,
        bucket_s=bucket_s,
        totals=totals,
        series=series,
        blocks_by_policy=[
            PolicyBlocks(p, n, n / whole.requests if whole.requests else 0.0) for p, n in blocks
        ],
        top_consumers=_top(tally.consumers),
        top_models=_top(tally.models),
    )
