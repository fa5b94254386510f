"""A history of the per-chunk policy histogram, for the stats API's chunk timeline.

Prometheus keeps only running totals: `ktproxy_policy_chunk_duration_seconds` says how
many chunk-filter calls fell in each latency bucket since the process started. A
`ChunkTimeline` snapshots those cumulative counts (summed over policies) every
`INTERVAL` seconds, at multiples of it, and keeps `KEEP` snapshots (24 hours). The
count of chunks in a time bucket is then the difference between the snapshots at its
two ends, and its p50/p99 are interpolated within the histogram's buckets the way
PromQL's `histogram_quantile` does.

The histogram is read through the application's registry: in `--workers N` mode that
is the collector merging every worker's multiprocess files, so each worker's timeline
shows the whole fleet. Nothing is stored; the history starts with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.registry import Collector

from ktproxy.metrics import METRICS, multiprocess_dir

log = logging.getLogger("ktproxy.metrics")

NAME = "ktproxy_policy_chunk_duration_seconds"
INTERVAL = 10.0  # seconds between snapshots
KEEP = 8640  # snapshots kept: 24 hours at INTERVAL


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative counts per upper bound (`inf` last) at time `t`."""

    t: float
    bounds: tuple[float, ...]
    counts: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ChunkPoint:
    t: float
    chunks: int
    p50_us: float | None
    p99_us: float | None


def read_histogram(sources: Iterable[Collector]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(upper bounds, cumulative counts) of the chunk histogram, summed over policies."""
    summed: dict[float, float] = {}
    for source in sources:
        for metric in source.collect():
            if metric.name != NAME:
                continue
            for sample in metric.samples:
                if sample.name == NAME + "_bucket":
                    le = float(sample.labels["le"])
                    summed[le] = summed.get(le, 0.0) + sample.value
    bounds = tuple(sorted(summed))
    return bounds, tuple(summed[b] for b in bounds)


def histogram_quantile(q: float, bounds: tuple[float, ...], counts: list[float]) -> float | None:
    """PromQL's `histogram_quantile` over cumulative `counts`: linear within a bucket,
    the lowest bucket starting at 0, the highest finite bound for the `+Inf` bucket."""
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if math.isinf(bounds[i]):
        return bounds[i - 1] if i > 0 else None
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    inside = counts[i] - below
    if inside <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / inside


class ChunkTimeline:
    """Snapshots of the chunk histogram of one application's registry."""

    def __init__(self, sources: Callable[[], list[Collector]]) -> None:
        self._sources = sources
        self.snapshots: deque[Snapshot] = deque(maxlen=KEEP)
        # Made with the application, whose histogram is empty now: the history begins
        # at zero, at this time.
        self.started = time.time()

    def read(self, now: float | None = None) -> Snapshot:
        bounds, counts = read_histogram(self._sources())
        return Snapshot(time.time() if now is None else now, bounds, counts)

    def snapshot(self, now: float | None = None) -> None:
        """Take one snapshot (times must not go back)."""
        shot = self.read(now)
        if self.snapshots and shot.t <= self.snapshots[-1].t:
            return
        self.snapshots.append(shot)

    def _at(self, shots: list[Snapshot], t: float) -> Snapshot | None:
        """The latest snapshot at or before `t` (None before the first)."""
        i = bisect_right([s.t for s in shots], t)
        return shots[i - 1] if i else None

    def series(self, first: int, buckets: int, bucket_s: int) -> list[ChunkPoint]:
        """Chunks and their p50/p99 (µs) in `buckets` buckets of `bucket_s` seconds from
        `first`; a bucket the history does not cover has `chunks: 0`."""
        shots = list(self.snapshots)
        current = self.read()
        if not shots or current.t > shots[-1].t:
            shots.append(current)
        zeros = tuple(0.0 for _ in current.bounds)
        shots.insert(0, Snapshot(self.started, current.bounds, zeros))
        out = []
        for i in range(buckets):
            t = first + i * bucket_s
            start = self._at(shots, t) or shots[0]
            out.append(self._point(float(t), start, self._at(shots, t + bucket_s)))
        return out

    @staticmethod
    def _point(t: float, start: Snapshot, end: Snapshot | None) -> ChunkPoint:
        if end is not None and not start.bounds:  # nothing observed yet: all zero
            start = Snapshot(start.t, end.bounds, tuple(0.0 for _ in end.bounds))
        if end is None or end.bounds != start.bounds or end.t <= start.t:
            return ChunkPoint(t, 0, None, None)
        # A negative difference is a restarted count (a dead worker's files removed).
        delta = [max(0.0, b - a) for a, b in zip(start.counts, end.counts, strict=True)]
        for i in range(1, len(delta)):
            delta[i] = max(delta[i], delta[i - 1])
        chunks = int(delta[-1]) if delta else 0
        if chunks == 0:
            return ChunkPoint(t, 0, None, None)
        p50 = histogram_quantile(0.5, end.bounds, delta)
        p99 = histogram_quantile(0.99, end.bounds, delta)
        return ChunkPoint(
            t,
            chunks,
            None if p50 is None else round(p50 * 1e6, 3),
            None if p99 is None else round(p99 * 1e6, 3),
        )

    async def run(self, interval: float = INTERVAL) -> None:
        """Snapshot at every multiple of `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval - time.time() % interval)
            try:
                self.snapshot()
            except Exception:  # keep the history going; the next snapshot may work
                log.exception("metrics: snapshotting the chunk histogram failed")


CHUNK_TIMELINE = web.AppKey("chunk_timeline", ChunkTimeline)


def app_sources(app: web.Application) -> Callable[[], list[Collector]]:
    """Where `app`'s chunk histogram is read: its own, or every worker's files."""

    def sources() -> list[Collector]:
        metrics = app[METRICS]
        if multiprocess_dir() is None:
            return [metrics.gateway.policy_chunk]  # this process's own histogram
        return [metrics.registry]  # every worker's multiprocess files, merged

    return sources


async def timeline_ctx(app: web.Application) -> AsyncIterator[None]:
    """Snapshots `app[CHUNK_TIMELINE]` every `INTERVAL` seconds (a `cleanup_ctx`)."""
    task = asyncio.get_running_loop().create_task(app[CHUNK_TIMELINE].run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
