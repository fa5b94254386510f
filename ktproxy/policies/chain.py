"""The compiled policy chain: bound hook methods, precomputed once per config.

`compile_chain` instantiates the configured policies and keeps, per hook, only the
policies that override it. Running a hook list that is empty is a length check, so
an unused hook costs nothing per request and nothing per streamed chunk.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from ktproxy.context import RequestContext
from ktproxy.policies.base import Policy, StreamFilter

log = logging.getLogger("ktproxy.policies")

_Hook = Callable[..., Any]


def _bound(policies: Sequence[Policy], hook: str) -> list[tuple[str, _Hook, bool]]:
    out = []
    for policy in policies:
        if hook in policy.enabled_hooks():
            fn = getattr(policy, hook)
            out.append((policy.name, fn, inspect.iscoroutinefunction(fn)))
    return out


class ChainedFilter:
    """Several filters for one choice applied in chain order, each feeding the next."""

    __slots__ = ("_filters",)

    def __init__(self, filters: list[StreamFilter]) -> None:
        self._filters = filters

    def feed(self, text: str) -> str:
        for f in self._filters:
            if not text:
                break
            text = f.feed(text)
        return text

    def flush(self) -> str:
        text = ""
        for f in self._filters:
            text = f.feed(text) if text else ""
            text += f.flush()
        return text

    @property
    def held(self) -> int:
        return sum(int(getattr(f, "held", 0)) for f in self._filters)


# One stream in this many has its filters' calls timed for the per-chunk histogram;
# the others pay nothing per chunk. At most this many calls per policy per stream.
CHUNK_TIMING_EVERY = 8
CHUNK_TIMING_CAP = 256


class TimedFilter:
    """A policy's stream filter whose calls are timed into a sampled stream's list."""

    __slots__ = ("_filter", "_seconds")

    def __init__(self, f: StreamFilter, seconds: list[float]) -> None:
        self._filter = f
        self._seconds = seconds

    @property
    def held(self) -> int:
        return int(getattr(self._filter, "held", 0))

    def feed(self, text: str) -> str:
        if len(self._seconds) >= CHUNK_TIMING_CAP:
            return self._filter.feed(text)
        start = perf_counter()
        out = self._filter.feed(text)
        self._seconds.append(perf_counter() - start)
        return out

    def flush(self) -> str:
        if len(self._seconds) >= CHUNK_TIMING_CAP:
            return self._filter.flush()
        start = perf_counter()
        out = self._filter.flush()
        self._seconds.append(perf_counter() - start)
        return out


class CompiledChain:
    """The policies of one config (or consumer group) with their hooks bound."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = tuple(policies)
        self._request = _bound(policies, "on_request")
        self._response = _bound(policies, "on_response")
        self._stream = [(n, fn) for n, fn, _ in _bound(policies, "stream_filter")]
        self._streams_seen = 0
        self._tool_args = [(n, fn) for n, fn, _ in _bound(policies, "tool_args_filter")]
        self._complete = _bound(policies, "on_complete")
        self.has_request_hooks = bool(self._request)
        self.has_response_hooks = bool(self._response)
        self.has_stream_filters = bool(self._stream or self._tool_args)
        self.has_tool_args_filters = bool(self._tool_args)
        self.has_complete_hooks = bool(self._complete)

    @property
    def names(self) -> tuple[str, ...]:
        """Policy names in chain order."""
        return tuple(p.name for p in self.policies)

    async def run_request(self, ctx: RequestContext) -> None:
        """Run every `on_request` hook in order; a `PolicyViolation` propagates. Each
        hook's time is added to `ctx.policy_seconds` (a blocking one's too)."""
        spent = ctx.policy_seconds
        for name, fn, is_async in self._request:
            started = perf_counter()
            try:
                if is_async:
                    await fn(ctx)
                else:
                    fn(ctx)
            finally:
                spent[name] = spent.get(name, 0.0) + perf_counter() - started

    async def run_response(self, ctx: RequestContext, body: dict[str, Any]) -> bool:
        """Run every `on_response` hook; True when any of them changed `body`."""
        changed = False
        spent = ctx.policy_seconds
        for name, fn, is_async in self._response:
            started = perf_counter()
            try:
                result = (await fn(ctx, body)) if is_async else fn(ctx, body)
            finally:
                spent[name] = spent.get(name, 0.0) + perf_counter() - started
            changed = bool(result) or changed
        return changed

    def time_stream(self, ctx: RequestContext) -> None:
        """Called once per stream: every `CHUNK_TIMING_EVERY`th one (the first included)
        gets its filter calls timed into `ctx.chunk_seconds`."""
        count = self._streams_seen
        self._streams_seen = count + 1
        timed = count % CHUNK_TIMING_EVERY == 0 and bool(self._stream or self._tool_args)
        ctx.chunk_seconds = {} if timed else None

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> StreamFilter | None:
        """The combined filter for one streamed choice, or None when no policy wants it."""
        filters: list[StreamFilter] = []
        timed = ctx.chunk_seconds
        for name, factory in self._stream:
            f = factory(ctx, choice_index)
            if f is not None:
                if timed is not None:
                    f = TimedFilter(f, timed.setdefault(name, []))
                filters.append(f)
        if not filters:
            return None
        return filters[0] if len(filters) == 1 else ChainedFilter(filters)

    def tool_args_filter(
        self, ctx: RequestContext, choice_index: int, call_index: int
    ) -> StreamFilter | None:
        """The combined filter for one streamed tool call's arguments, or None."""
        filters: list[StreamFilter] = []
        timed = ctx.chunk_seconds
        for name, factory in self._tool_args:
            f = factory(ctx, choice_index, call_index)
            if f is not None:
                if timed is not None:
                    f = TimedFilter(f, timed.setdefault(name, []))
                filters.append(f)
        if not filters:
            return None
        return filters[0] if len(filters) == 1 else ChainedFilter(filters)

    async def run_complete(self, ctx: RequestContext) -> None:
        """Run every `on_complete` hook; a failing hook is logged with its name, not raised."""
        for name, fn, is_async in self._complete:
            try:
                if is_async:
                    await fn(ctx)
                else:
                    fn(ctx)
            except Exception:
                log.exception("policy %s failed in on_complete", name)


EMPTY_CHAIN = CompiledChain(())


def compile_chain(
    names: Sequence[str],
    options: dict[str, Any],
    registry: dict[str, type[Policy]],
) -> CompiledChain:
    """Instantiate `names` from `registry` with their decoded options."""
    policies = []
    for name in names:
        cls = registry[name]
        policies.append(cls(options.get(name, cls.Options())))
    return CompiledChain(policies)
