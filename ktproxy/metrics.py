"""`/metrics`: Prometheus text format for one worker, or for all of them.

Two kinds of metrics. Per-request ones (requests, latencies, time to first token,
streamed chunks, tokens, policy decisions, upstream attempts) are recorded once, when
a request ends, from its `RequestContext` (`GatewayMetrics.record`); in-flight
requests and streams are gauges moved at their start and end; a streamed chunk costs
one integer increment on the context. Counters that already exist for other reasons
(the audit writers' statistics, rate-limit refusals, fallbacks, circuit breakers,
config reloads) are read from the worker's state (`read_state`, one `StateMetric`
each), so nothing on the request path pays for them.

Label values are only names from the config (routes, consumer groups, targets,
sinks, policies and their codes) or model names the config knows; any other model
name a client sends is counted as `other`, so a client cannot grow the series.

One worker (and tests, with several gateways in one process) uses a registry per
application, and `GatewayCollector` reads the state when Prometheus scrapes. With
`--workers N` the supervisor gives the workers one fresh directory and
prometheus_client's multiprocess mode keeps the metrics in files there; any worker's
`/metrics` merges every worker's files (`FleetCollector`), so it reports the fleet
whichever worker answers. Each worker's `FleetMirror` copies its state into its files
every second and before it answers a scrape; the names, types and labels are those of
one worker. How the workers add up, by `StateMetric.fleet`:

- counters (audit records, write failures, purged records, rate-limit refusals,
  fallbacks, circuit breaker openings) are summed over every worker that ever ran,
  dead ones included, so they never go down when a worker is replaced (what a worker
  counted in its last second before it was killed is lost);
- the audit queue depth is summed over the live workers, and a target's circuit is
  open (1) while any live worker rests it;
- config reloads: the supervisor passes SIGHUP to every worker and each reloads, so
  one SIGHUP counts once per outcome any worker had (the largest count of any worker;
  a worker that replaces a dead one starts from the fleet's count). A reload less
  than a second before a worker is replaced may be missed by the replacement's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ktproxy.configcheck import LoadedConfig
from ktproxy.context import RequestContext
from ktproxy.runtime import Runtime
from ktproxy.state import GatewayState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
# Seconds between a worker's copies of its state into the multiprocess files.
MIRROR_INTERVAL = 1.0

log = logging.getLogger("ktproxy.metrics")

# Seconds: gateway and upstream latency span local mocks (sub-millisecond) to long
# generations.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
# Policies take microseconds: buckets from 1 µs to 1 s.
POLICY_BUCKETS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0,
)  # fmt: skip


def use_multiprocess(path: str) -> None:
    """Switch this (forked worker) process to prometheus_client's multiprocess mode.

    prometheus_client picks its value class from the environment once, when
    `prometheus_client.values` is imported, and every metric made later takes
    `values.ValueClass`. The supervisor imported it before forking (the app module
    imports this one), so a worker sets the variable and picks the class again, before
    its application (and so any metric) exists.
    """
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The multiprocess directory of this process, None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def known_models(loaded: LoadedConfig) -> frozenset[str]:
    """Model names that may appear as a label value: the ones the config names."""
    config = loaded.config
    names: set[str] = set()
    for target in config.providers.targets:
        names.update((target.id, target.model, f"{target.provider}:chat:{target.model}"))
    names.update(spec.name for spec in config.routing.models)
    return frozenset(names)


class GatewayMetrics:
    """The metric objects of one application (or, in multiprocess mode, one worker)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry  # None in multiprocess mode: the files are the registry
        self.requests = Counter(
            "ktproxy_requests",
            "Requests by route, model (`other`: a name the config does not know), "
            "target, consumer group and HTTP status (499: the client went away).",
            ["route", "model", "target", "consumer_group", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "ktproxy_request_duration_seconds",
            "Gateway latency: request received to response (or stream) finished.",
            ["route", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            "ktproxy_upstream_duration_seconds",
            "Upstream latency: request sent to response headers, retries included.",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "ktproxy_time_to_first_token_seconds",
            "Streams: request received to the first streamed bytes written.",
            ["route", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.policy = Histogram(
            "ktproxy_policy_duration_seconds",
            "Time a policy's request and response hooks took for one request.",
            ["policy"],
            buckets=POLICY_BUCKETS,
            registry=r,
        )
        self.policy_chunk = Histogram(
            "ktproxy_policy_chunk_duration_seconds",
            "Time a policy's stream filter took for one streamed chunk (or the flush at "
            "a choice's end); sampled: every 8th stream's calls, at most 256 per stream.",
            ["policy"],
            buckets=POLICY_BUCKETS,
            registry=r,
        )
        self.chunks = Counter(
            "ktproxy_stream_chunks",
            "Stream writes to clients (upstream chunks relayed).",
            ["route", "target"],
            registry=r,
        )
        self.tokens = Counter(
            "ktproxy_tokens",
            "Tokens by direction (in: prompt, out: completion), from the usage the "
            "gateway reads (when the chain has on_complete hooks, e.g. audit-logger, or "
            "the group has a token limit).",
            ["direction", "model", "target", "consumer_group"],
            registry=r,
        )
        self.decisions = Counter(
            "ktproxy_policy_decisions",
            "Policy decisions by policy, action and code.",
            ["policy", "action", "code"],
            registry=r,
        )
        self.attempts = Counter(
            "ktproxy_upstream_attempts",
            "Calls to upstream targets by outcome (ok, client_error, 5xx, 429, connect, "
            "timeout); retries and fallbacks make several per request.",
            ["target", "outcome"],
            registry=r,
        )
        self.inflight = Gauge(
            "ktproxy_inflight_requests",
            "Requests being served.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.streams = Gauge(
            "ktproxy_inflight_streams",
            "Streams being relayed.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Label children by their values: `labels()` validates and locks on every call.
        self._children: dict[tuple[object, ...], Any] = {}
        self._models: dict[int, tuple[LoadedConfig, frozenset[str]]] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def model_label(self, model: str, loaded: LoadedConfig) -> str:
        """`model` when the config knows the name, else `other`."""
        found = self._models.get(id(loaded))
        if found is None or found[0] is not loaded:
            if len(self._models) > 8:  # old configs after many reloads
                self._models.clear()
            found = self._models[id(loaded)] = (loaded, known_models(loaded))
        return model if model in found[1] else OTHER

    def record(self, ctx: RequestContext, runtime: Runtime, now: float | None = None) -> None:
        """Count one finished request (called once, from the pipeline's `finally:`)."""
        if now is None:
            now = time.perf_counter()
        status = ctx.status
        if status is None:
            status = 499 if ctx.error_code == "client_closed" else 500
        route = ctx.endpoint
        target = ctx.target_id or "none"
        group = ctx.consumer or "none"
        model = self.model_label(ctx.model, runtime.loaded) if ctx.model else "none"
        child = self._child
        child(self.requests, route, model, target, group, str(status)).inc()
        child(self.duration, route, target).observe(now - ctx.started)
        if ctx.upstream_ms is not None:
            child(self.upstream, target).observe(ctx.upstream_ms / 1000)
        if ctx.ttft_ms is not None:
            child(self.ttft, route, target).observe(ctx.ttft_ms / 1000)
        if ctx.chunks:
            child(self.chunks, route, target).inc(ctx.chunks)
        usage = ctx.usage
        if usage:
            tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(tin, int) and tin > 0:
                child(self.tokens, "in", model, target, group).inc(tin)
            if isinstance(tout, int) and tout > 0:
                child(self.tokens, "out", model, target, group).inc(tout)
        for d in ctx.decisions:
            child(self.decisions, d.policy, d.action, d.code or "").inc()
        for policy, seconds in ctx.policy_seconds.items():
            child(self.policy, policy).observe(seconds)
        if ctx.chunk_seconds:
            for policy, calls in ctx.chunk_seconds.items():
                per_chunk = child(self.policy_chunk, policy)
                for seconds in calls:
                    per_chunk.observe(seconds)
        for a in ctx.attempts:
            child(self.attempts, a.target, a.outcome).inc()


@dataclass(frozen=True, slots=True)
class StateMetric:
    """A metric read from a worker's own state (not recorded per request).

    `fleet` is how the workers' values add up under `--workers N`: the prometheus_client
    multiprocess mode its mirror is kept in. `sum`: a counter, summed over every worker
    that ever ran. `livesum`, `livemax`: a gauge over the live workers. `max`: a counter
    every worker counts the same events of (each gets the supervisor's SIGHUP), so the
    fleet's count is the largest.
    """

    name: str
    documentation: str
    labels: tuple[str, ...]
    fleet: Literal["sum", "livesum", "livemax", "max"]
    # Counted by a config's runtime, so it starts again from zero after a reload.
    per_runtime: bool = False

    @property
    def counter(self) -> bool:
        """Exposed as a counter (else a gauge)."""
        return self.fleet in ("sum", "max")


AUDIT_RECORDS = StateMetric(
    "ktproxy_audit_records",
    "Audit records by outcome: written to the sink, or dropped (queue full).",
    ("sink", "outcome"),
    "sum",
)
AUDIT_QUEUE_DEPTH = StateMetric(
    "ktproxy_audit_queue_depth", "Audit records waiting for the writer.", ("sink",), "livesum"
)
AUDIT_WRITE_FAILURES = StateMetric(
    "ktproxy_audit_write_failures", "Failed (and retried) sink writes.", ("sink",), "sum"
)
AUDIT_PURGED = StateMetric(
    "ktproxy_audit_purged_records", "Records removed by retention.", ("sink",), "sum"
)
AUDIT_SPOOL_BYTES = StateMetric(
    "ktproxy_audit_spool_bytes",
    "Bytes of audit records spooled locally while their sink (PostgreSQL) is unreachable.",
    ("sink",),
    "livesum",
)
AUDIT_SPOOL_RECORDS = StateMetric(
    "ktproxy_audit_spool_records",
    "Audit records spooled locally, waiting to be replayed into their sink.",
    ("sink",),
    "livesum",
)
RATE_LIMITED = StateMetric(
    "ktproxy_rate_limited_requests",
    "Requests refused by a consumer group's rate limit (kind: requests, tokens) or "
    "spent token budget (kind: budget_day, budget_month).",
    ("consumer_group", "kind"),
    "sum",
)
STATE_BACKEND_ERRORS = StateMetric(
    "ktproxy_state_backend_errors",
    "Requests decided without the state backend (Redis) because it failed or was "
    "resting after a failure, by feature and outcome (served: fail-open, refused: "
    "fail-closed).",
    ("feature", "outcome"),
    "sum",
)
OVERLOADED = StateMetric(
    "ktproxy_overloaded_requests",
    "Requests refused with 503 by a worker's concurrency limit (kind: requests, streams).",
    ("kind",),
    "sum",
)
FALLBACKS = StateMetric(
    "ktproxy_fallbacks",
    "Requests moved on from a failing target.",
    ("target",),
    "sum",
    per_runtime=True,
)
CIRCUIT_OPENED = StateMetric(
    "ktproxy_circuit_opened",
    "Times a target's circuit breaker rested it.",
    ("target",),
    "sum",
    per_runtime=True,
)
CIRCUIT_OPEN = StateMetric(
    "ktproxy_circuit_open",
    "1 while a target's circuit breaker rests it (with --workers: in any worker).",
    ("target",),
    "livemax",
)
CONFIG_RELOADS = StateMetric(
    "ktproxy_config_reloads",
    "Config reloads (SIGHUP) by outcome: applied, rejected (the config has errors), "
    "failed (it did not start); with --workers, one SIGHUP counts once.",
    ("outcome",),
    "max",
)
UPSTREAM_CONNECTIONS = StateMetric(
    "ktproxy_upstream_connections",
    "Pooled upstream connections per origin (scheme://host:port) by state: in_use "
    "(checked out or connecting), idle (kept alive for reuse), waiting (requests "
    "queued for a connection at the target's max_connections).",
    ("origin", "state"),
    "livesum",
)
STREAM_HELD = StateMetric(
    "ktproxy_stream_held_characters",
    "Characters of streamed text the stream filters hold back right now (a value that "
    "may still be completing), summed over the open streams.",
    (),
    "livesum",
)
STREAM_HELD_MAX = StateMetric(
    "ktproxy_stream_held_characters_max",
    "The largest hold-back of one open stream, in characters (bounded by the filters' max_hold).",
    (),
    "livemax",
)
# In the order of the exposition.
STATE_METRICS = (
    AUDIT_RECORDS,
    AUDIT_QUEUE_DEPTH,
    AUDIT_WRITE_FAILURES,
    AUDIT_PURGED,
    AUDIT_SPOOL_BYTES,
    AUDIT_SPOOL_RECORDS,
    RATE_LIMITED,
    STATE_BACKEND_ERRORS,
    OVERLOADED,
    FALLBACKS,
    CIRCUIT_OPENED,
    CIRCUIT_OPEN,
    CONFIG_RELOADS,
    UPSTREAM_CONNECTIONS,
    STREAM_HELD,
    STREAM_HELD_MAX,
)

Samples = dict[StateMetric, list[tuple[tuple[str, ...], float]]]


def read_state(state: GatewayState, runtime: Runtime | None) -> Samples:
    """Every `StateMetric`'s samples: `state`'s values, with `runtime`'s counts."""
    samples: Samples = {spec: [] for spec in STATE_METRICS}
    writers = runtime.resources.audit_writers if runtime is not None else []
    for writer in writers:
        sink = type(writer.sink).__name__.removesuffix("Sink").lower()
        spool = getattr(writer.sink, "spool", None)  # the PostgreSQL sink's
        spooled = (spool.size, spool.records, spool.dropped) if spool is not None else None
        samples[AUDIT_RECORDS] += [
            ((sink, "written"), writer.stats.written - (spooled[2] if spooled else 0)),
            ((sink, "dropped"), writer.stats.dropped + (spooled[2] if spooled else 0)),
        ]
        if spooled is not None:
            samples[AUDIT_SPOOL_BYTES].append(((sink,), spooled[0]))
            samples[AUDIT_SPOOL_RECORDS].append(((sink,), spooled[1]))
        samples[AUDIT_QUEUE_DEPTH].append(((sink,), writer.depth))
        samples[AUDIT_WRITE_FAILURES].append(((sink,), writer.stats.write_failures))
        samples[AUDIT_PURGED].append(((sink,), writer.stats.purged))
    refusals = {}
    if runtime is not None:
        refusals = {**runtime.limiter.refusals, **runtime.budgets.refusals}
    samples[RATE_LIMITED] = [(key, count) for key, count in sorted(refusals.items())]
    errors = state.backend.errors
    samples[STATE_BACKEND_ERRORS] = [(key, count) for key, count in sorted(errors.items())]
    samples[OVERLOADED] = [
        ((kind,), state.overloaded.get(kind, 0)) for kind in ("requests", "streams")
    ]
    if runtime is not None:
        runner = runtime.attempts
        samples[FALLBACKS] = [((t,), n) for t, n in sorted(runner.fallbacks.items())]
        samples[CIRCUIT_OPENED] = [((t,), n) for t, n in sorted(runner.breakers.opened.items())]
        samples[CIRCUIT_OPEN] = [
            ((tid,), 1.0 if runner.breakers.is_open(tid) else 0.0)
            for tid in (provider.target.id for provider in runtime.router.providers)
        ]
    samples[CONFIG_RELOADS] = [
        ((outcome,), state.reloads.get(outcome, 0)) for outcome in ("applied", "rejected", "failed")
    ]
    for pool in state.pool.stats():
        origin = _origin_label(pool.origin)
        samples[UPSTREAM_CONNECTIONS] += [
            ((origin, "in_use"), pool.in_use),
            ((origin, "idle"), pool.idle),
            ((origin, "waiting"), pool.waiting),
        ]
    held = [rewriter.held() for rewriter in list(state.rewriters)]
    samples[STREAM_HELD] = [((), float(sum(held)))]
    samples[STREAM_HELD_MAX] = [((), float(max(held, default=0)))]
    return samples


def _origin_label(origin: str) -> str:
    """`scheme://host:port` of a pool's origin: never the user:password a base_url
    may carry."""
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}"


class GatewayCollector(Collector):
    """Reads one application's state when scraped (one worker, or tests' gateways)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        for spec, samples in read_state(self.state, self.state.runtime).items():
            family_type = CounterMetricFamily if spec.counter else GaugeMetricFamily
            family = family_type(spec.name, spec.documentation, labels=spec.labels)
            for labels, value in samples:
                family.add_metric(labels, value)
            yield family


class FleetMirror:
    """Copies a worker's `StateMetric`s into its multiprocess files (`--workers N`).

    `sync` is cheap (it writes only what changed) and runs every `MIRROR_INTERVAL`
    seconds and before the worker answers a scrape, never per request. Counters are
    mirrored as increments, so a dead worker's count stays in the sum and a config's
    runtime starting again from zero does not make the sum go down. A `max` counter is
    mirrored as this worker's count plus the fleet's count when it started, since a
    worker that replaces a dead one has missed the SIGHUPs before it.
    """

    def __init__(self, state: GatewayState, path: str) -> None:
        self.state = state
        self._metrics: dict[StateMetric, Counter | Gauge] = {
            spec: Counter(spec.name, spec.documentation, spec.labels, registry=None)
            if spec.fleet == "sum"
            else Gauge(
                spec.name,
                spec.documentation,
                spec.labels,
                registry=None,
                multiprocess_mode=spec.fleet,
            )
            for spec in STATE_METRICS
        }
        self._children: dict[tuple[StateMetric, tuple[str, ...]], Any] = {}
        self._last: dict[StateMetric, dict[tuple[str, ...], float]] = {
            spec: {} for spec in STATE_METRICS
        }
        self._runtime: Runtime | None = None
        self._base = _fleet_max(path)

    def sync(self) -> None:
        """Write the values that changed since the last call."""
        state, runtime = self.state, self.state.runtime
        if runtime is not self._runtime:
            if self._runtime is not None:  # the retired runtime's last counts, then zero
                retired = read_state(state, self._runtime)
                for spec in STATE_METRICS:
                    if spec.per_runtime:
                        self._apply(spec, retired[spec])
                        self._last[spec].clear()
            self._runtime = runtime
        for spec, samples in read_state(state, runtime).items():
            self._apply(spec, samples)

    def _apply(self, spec: StateMetric, samples: list[tuple[tuple[str, ...], float]]) -> None:
        last = self._last[spec]
        base = self._base.get(spec, {})
        for labels, value in samples:
            value += base.get(labels, 0.0)
            before = last.get(labels)
            if value == before:
                continue
            child = self._child(spec, labels)
            if spec.fleet == "sum":  # below the last value: the count started again
                child.inc(value - before if before is not None and value > before else value)
            else:
                child.set(value)
            last[labels] = value
        if not spec.counter:  # a sink or target gone with a reload reads 0
            present = {labels for labels, _ in samples}
            for labels in [labels for labels in last if labels not in present]:
                self._child(spec, labels).set(0.0)
                del last[labels]

    def _child(self, spec: StateMetric, labels: tuple[str, ...]) -> Any:
        child = self._children.get((spec, labels))
        if child is None:
            metric = self._metrics[spec]
            child = metric.labels(*labels) if spec.labels else metric
            self._children[spec, labels] = child
        return child

    async def run(self, interval: float = 1.0) -> None:
        """`sync` every `interval` seconds until cancelled."""
        while True:
            try:
                self.sync()
            except Exception:  # keep mirroring; a scrape's own sync raises to the scraper
                log.exception("metrics: mirroring the worker's state failed")
            await asyncio.sleep(interval)


def _fleet_max(path: str) -> dict[StateMetric, dict[tuple[str, ...], float]]:
    """The `max` counters' values in the multiprocess files under `path`."""
    specs = {spec.name: spec for spec in STATE_METRICS if spec.fleet == "max"}
    files = glob.glob(os.path.join(path, "gauge_max_*.db"))
    found: dict[StateMetric, dict[tuple[str, ...], float]] = {}
    merged = MultiProcessCollector.merge(files, accumulate=False)  # type: ignore[no-untyped-call]
    for metric in merged:
        spec = specs.get(metric.name)
        if spec is not None:
            found[spec] = {
                tuple(s.labels[label] for label in spec.labels): s.value for s in metric.samples
            }
    return found


class FleetCollector(Collector):
    """Every worker's multiprocess files, merged by prometheus_client; the `max`
    counters, kept as gauges there, are exposed as the counters they are."""

    def __init__(self, path: str) -> None:
        self._files = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self._max_counters = {spec.name for spec in STATE_METRICS if spec.fleet == "max"}

    def collect(self) -> Iterator[Metric]:
        metric: Metric
        for metric in self._files.collect():  # type: ignore[no-untyped-call]
            if metric.name in self._max_counters:
                metric.type = "counter"
                metric.samples = [s._replace(name=f"{s.name}_total") for s in metric.samples]
            yield metric


class Metrics:
    """An application's metrics: what requests record, and the registry to scrape."""

    def __init__(self, state: GatewayState) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        path = multiprocess_dir()
        self.mirror: FleetMirror | None = None
        if path is None:
            self.gateway = GatewayMetrics(self.registry)
            self.registry.register(GatewayCollector(state))
        else:
            self.gateway = GatewayMetrics(None)
            self.mirror = FleetMirror(state, path)
            self.registry.register(FleetCollector(path))


METRICS = web.AppKey("ktproxy.metrics", Metrics)


async def mirror_ctx(app: web.Application) -> AsyncIterator[None]:
    """With `--workers N`, mirrors the worker's state every `MIRROR_INTERVAL` seconds
    (a `cleanup_ctx`; after the runtime's, so it stops before the runtime closes)."""
    mirror = app[METRICS].mirror
    if mirror is None:
        yield
        return
    task = asyncio.get_running_loop().create_task(mirror.run(MIRROR_INTERVAL))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        mirror.sync()


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`."""
    registry = request.app[METRICS]
    if registry.mirror is not None:
        registry.mirror.sync()  # this worker's latest; the others' are at most a second old
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def metrics_app(app: web.Application) -> web.Application:
    """An application serving only the `/metrics` of `app` (for `--metrics-port`)."""
    only = web.Application()
    only[METRICS] = app[METRICS]
    only.router.add_get("/metrics", metrics)
    return only
