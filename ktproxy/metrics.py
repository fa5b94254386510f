"""`/metrics`: Prometheus text format for one worker, or for all of them.

Two kinds of metrics. Per-request ones (requests, latencies, time to first token,
streamed chunks, tokens, policy decisions, upstream attempts) are recorded once, when
a request ends, from its `RequestContext` (`GatewayMetrics.record`); in-flight
requests and streams are gauges moved at their start and end; a streamed chunk costs
one integer increment on the context. Counters that already exist for other reasons
(the audit writers' statistics, rate-limit refusals, fallbacks, circuit breakers,
config reloads) are read when Prometheus scrapes (`GatewayCollector`), so nothing on
the request path pays for them.

Label values are only names from the config (routes, consumer groups, targets,
sinks, policies and their codes) or model names the config knows; any other model
name a client sends is counted as `other`, so a client cannot grow the series.

With `--workers N` the supervisor gives the workers one fresh directory and
prometheus_client's multiprocess mode keeps the per-request metrics in files there;
any worker's `/metrics` sums every worker's files. The scrape-time collector still
describes only the worker that answered (its help text says so). One worker (and
tests, with several gateways in one process) uses a registry per application.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

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
            "Time a policy's request and response hooks took for one request (streams: "
            "the per-chunk filters are measured by benchmarks/bench_chunk.py instead).",
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
        for a in ctx.attempts:
            child(self.attempts, a.target, a.outcome).inc()


class GatewayCollector(Collector):
    """Reads one worker's state when scraped."""

    def __init__(self, state: GatewayState, per_worker: bool = False) -> None:
        self.state = state
        # In multiprocess mode these describe only the worker that answered the scrape.
        self.note = " (per worker: the worker that answered this scrape)" if per_worker else ""

    def collect(self) -> Iterator[Metric]:
        state, note = self.state, self.note
        runtime = state.runtime
        writers = runtime.resources.audit_writers if runtime is not None else []
        records = CounterMetricFamily(
            "ktproxy_audit_records",
            "Audit records by outcome: written to the sink, or dropped (queue full)." + note,
            labels=["sink", "outcome"],
        )
        depth = GaugeMetricFamily(
            "ktproxy_audit_queue_depth",
            "Audit records waiting for the writer." + note,
            labels=["sink"],
        )
        failures = CounterMetricFamily(
            "ktproxy_audit_write_failures",
            "Failed (and retried) sink writes." + note,
            labels=["sink"],
        )
        purged = CounterMetricFamily(
            "ktproxy_audit_purged_records", "Records removed by retention." + note, labels=["sink"]
        )
        for writer in writers:
            sink = type(writer.sink).__name__.removesuffix("Sink").lower()
            records.add_metric([sink, "written"], writer.stats.written)
            records.add_metric([sink, "dropped"], writer.stats.dropped)
            depth.add_metric([sink], writer.depth)
            failures.add_metric([sink], writer.stats.write_failures)
            purged.add_metric([sink], writer.stats.purged)
        yield from (records, depth, failures, purged)
        limited = CounterMetricFamily(
            "ktproxy_rate_limited_requests",
            "Requests refused by a consumer group's rate limit." + note,
            labels=["consumer_group", "kind"],
        )
        refusals = getattr(runtime.limiter, "refusals", {}) if runtime is not None else {}
        for (group, kind), count in sorted(refusals.items()):
            limited.add_metric([group, kind], count)
        yield limited
        fallbacks = CounterMetricFamily(
            "ktproxy_fallbacks", "Requests moved on from a failing target." + note,
            labels=["target"],
        )  # fmt: skip
        opened = CounterMetricFamily(
            "ktproxy_circuit_opened", "Times a target's circuit breaker rested it." + note,
            labels=["target"],
        )  # fmt: skip
        resting = GaugeMetricFamily(
            "ktproxy_circuit_open", "1 while a target's circuit breaker rests it." + note,
            labels=["target"],
        )  # fmt: skip
        if runtime is not None:
            runner = runtime.attempts
            for target, count in sorted(runner.fallbacks.items()):
                fallbacks.add_metric([target], count)
            for target, count in sorted(runner.breakers.opened.items()):
                opened.add_metric([target], count)
            for provider in runtime.router.providers:
                tid = provider.target.id
                resting.add_metric([tid], 1.0 if runner.breakers.is_open(tid) else 0.0)
        yield from (fallbacks, opened, resting)
        reloads = CounterMetricFamily(
            "ktproxy_config_reloads",
            "Config reloads (SIGHUP) by outcome: applied, rejected (the config has "
            "errors), failed (it did not start)." + note,
            labels=["outcome"],
        )
        for outcome in ("applied", "rejected", "failed"):
            reloads.add_metric([outcome], state.reloads.get(outcome, 0))
        yield reloads


class Metrics:
    """An application's metrics: what requests record, and the registry to scrape."""

    def __init__(self, state: GatewayState) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        path = multiprocess_dir()
        if path is None:
            self.gateway = GatewayMetrics(self.registry)
        else:
            self.gateway = GatewayMetrics(None)
            MultiProcessCollector(self.registry, path)  # type: ignore[no-untyped-call]
        self.registry.register(GatewayCollector(state, per_worker=path is not None))


METRICS = web.AppKey("ktproxy.metrics", Metrics)


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def metrics_app(app: web.Application) -> web.Application:
    """An application serving only the `/metrics` of `app` (for `--metrics-port`)."""
    only = web.Application()
    only[METRICS] = app[METRICS]
    only.router.add_get("/metrics", metrics)
    return only
