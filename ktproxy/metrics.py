"""`/metrics`: Prometheus text format, read from the gateway's own counters at scrape.

Counters that already exist for other reasons (the audit writers' statistics, the
rate limiter's refusals) are collected when Prometheus scrapes, so nothing on the
request path pays for them. Each application has its own registry (several gateways
can live in one test process). Label values are only names from the config (consumer
groups, sinks), never anything a client sends.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ktproxy.state import STATE, GatewayState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayCollector(Collector):
    """Reads one worker's state when scraped."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        inflight = GaugeMetricFamily("ktproxy_inflight_requests", "Requests being served.")
        inflight.add_metric([], state.inflight)
        yield inflight
        runtime = state.runtime
        writers = runtime.resources.audit_writers if runtime is not None else []
        records = CounterMetricFamily(
            "ktproxy_audit_records",
            "Audit records by outcome: written to the sink, or dropped (queue full).",
            labels=["sink", "outcome"],
        )
        depth = GaugeMetricFamily(
            "ktproxy_audit_queue_depth", "Audit records waiting for the writer.", labels=["sink"]
        )
        failures = CounterMetricFamily(
            "ktproxy_audit_write_failures", "Failed (and retried) sink writes.", labels=["sink"]
        )
        purged = CounterMetricFamily(
            "ktproxy_audit_purged_records", "Records removed by retention.", labels=["sink"]
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
            "Requests refused by a consumer group's rate limit.",
            labels=["consumer_group", "kind"],
        )
        refusals = getattr(runtime.limiter, "refusals", {}) if runtime is not None else {}
        for (group, kind), count in sorted(refusals.items()):
            limited.add_metric([group, kind], count)
        yield limited
        attempts = CounterMetricFamily(
            "ktproxy_upstream_attempts",
            "Calls to upstream targets by outcome (ok, client_error, 5xx, 429, connect, "
            "timeout); retries and fallbacks make several per request.",
            labels=["target", "outcome"],
        )
        fallbacks = CounterMetricFamily(
            "ktproxy_fallbacks", "Requests moved on from a failing target.", labels=["target"]
        )
        opened = CounterMetricFamily(
            "ktproxy_circuit_opened", "Times a target's circuit breaker rested it.",
            labels=["target"],
        )  # fmt: skip
        resting = GaugeMetricFamily(
            "ktproxy_circuit_open", "1 while a target's circuit breaker rests it.",
            labels=["target"],
        )  # fmt: skip
        if runtime is not None:
            runner = runtime.attempts
            for (target, outcome), count in sorted(runner.counts.items()):
                attempts.add_metric([target, outcome], count)
            for target, count in sorted(runner.fallbacks.items()):
                fallbacks.add_metric([target], count)
            for target, count in sorted(runner.breakers.opened.items()):
                opened.add_metric([target], count)
            for provider in runtime.router.providers:
                tid = provider.target.id
                resting.add_metric([tid], 1.0 if runner.breakers.is_open(tid) else 0.0)
        yield from (attempts, fallbacks, opened, resting)


def registry_for(app: web.Application) -> CollectorRegistry:
    """A registry holding this application's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(app[STATE]))
    return registry


METRICS = web.AppKey("ktproxy.metrics", CollectorRegistry)


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`."""
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
