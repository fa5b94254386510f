"""`POST /v1/chat/completions`: decode, route, run the policy chain, relay.

The request's original bytes are forwarded unless the model name had to be
rewritten or a policy changed the body, so fields the gateway does not know reach
the provider untouched. Streams are relayed event by event as they arrive; with no
stream filter in the chain, upstream bytes are written on without being parsed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol
from weakref import WeakSet

import msgspec
import orjson
from aiohttp import web

from ktproxy.api.identity import bearer, identify
from ktproxy.api.stream_rewriter import StreamRewriter
from ktproxy.consumers import Group
from ktproxy.context import Decision, RequestContext
from ktproxy.errors import (
    GatewayError,
    backend_unavailable,
    bad_request,
    budget_exceeded,
    model_not_allowed,
    model_not_found,
    overloaded,
    payload_too_large,
    rate_limited,
    request_timeout,
    state_unavailable,
    unauthorized,
)
from ktproxy.errors import policy_violation as violation_error
from ktproxy.ids import new_request_id
from ktproxy.limits import StateUnavailable
from ktproxy.logs import log_request
from ktproxy.metrics import METRICS
from ktproxy.policies.base import PolicyViolation
from ktproxy.policies.chain import CompiledChain
from ktproxy.providers.base import Provider, UpstreamCall, UpstreamResponse
from ktproxy.providers.registry import NETWORKED
from ktproxy.providers.router import Route
from ktproxy.runtime import Runtime
from ktproxy.secrets_scrub import scrub_headers, scrub_secrets
from ktproxy.state import STATE
from ktproxy.wire.openai import ChatRequestHead, request_head_decoder
from ktproxy.wire.sse import data_event


class Translator(Protocol):
    """Turns the pipeline's OpenAI SSE output into a surface's stream format."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Surface:
    """An API surface served by the one OpenAI-shaped pipeline of this module.

    `/v1/chat/completions` is the pipeline's own format. Another surface (Anthropic's
    `/v1/messages`) turns its request into an OpenAI chat request, and the pipeline's
    output (bodies, upstream error bodies, SSE) back into its own format; policies,
    routing, stream hold-back and audit are the same.
    """

    endpoint: str
    # Headers a client's own provider key may come in (bearer token first).
    key_headers: tuple[str, ...] = ()
    to_chat: Callable[[bytes], bytes] | None = None  # client body -> OpenAI chat body
    from_chat: Callable[[bytes], bytes] | None = None  # OpenAI completion -> client body
    error_from_chat: Callable[[int, bytes], bytes] | None = None  # OpenAI error -> client
    stream_from_chat: Callable[[RequestContext], Translator] | None = None


CHAT = Surface("chat.completions")

log = logging.getLogger("ktproxy.api")


# Bearer values that mean "no key of my own: use the gateway's".
PLACEHOLDER_KEYS = frozenset({"", "any", "unused", "none", "null", "no-key"})

# Client request headers an OpenAI-compatible upstream may legitimately need.
FORWARD_HEADERS = (
    "openai-organization",
    "openai-project",
    "openai-beta",
    "idempotency-key",
    "anthropic-beta",
)

_JSON_TYPES = ("application/json", "text/json", "application/x-json")


async def read_body(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, refusing with 413 before reading past `limit` bytes and with 408
    when it takes longer than `timeout` seconds (default `gateway.body_timeout`)."""
    length = request.content_length
    if length is not None and length > limit:
        raise payload_too_large(limit)
    if timeout is None:
        timeout = request.app[STATE].loaded.config.gateway.body_timeout
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise payload_too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise request_timeout("body", timeout) from None
    return b"".join(chunks)


def _check_content_type(request: web.Request) -> None:
    ctype = request.headers.get("Content-Type")
    if ctype is None:
        return
    main = ctype.split(";", 1)[0].strip().lower()
    if main and main not in _JSON_TYPES:
        raise GatewayError(
            415,
            f"Unsupported content type `{main}`; send application/json.",
            type="invalid_request_error",
            code="unsupported_media_type",
        )


def _decode_error(exc: msgspec.DecodeError) -> GatewayError:
    message = str(exc)
    param = None
    if " - at `$." in message:
        message, _, where = message.partition(" - at `$.")
        param = where.rstrip("`")
    elif "missing required field `" in message:
        param = message.split("`")[1]
    if isinstance(exc, msgspec.ValidationError):
        return bad_request(f"Invalid request: {message}", param=param)
    return bad_request(f"Request body is not valid JSON: {message}", code="invalid_json")


def decode_request(raw: bytes) -> tuple[ChatRequestHead, Any]:
    """The fields the gateway reads, type-checked, or a 400 naming the first bad one;
    and the whole body as orjson parsed it (the request's `ctx.body`, parsed once).

    The whole body must parse with orjson too, because policies and provider adapters
    read it with orjson: that refuses what msgspec lets pass in the fields it skips
    (invalid UTF-8, numbers beyond a double) and caps nesting at 1024 levels; msgspec
    itself stops at Python's recursion limit, with a RecursionError.
    """
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise _too_deep() from None
        raise bad_request(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    try:
        return request_head_decoder.decode(raw), decoded
    except msgspec.DecodeError as exc:
        raise _decode_error(exc) from None
    except RecursionError:
        raise _too_deep() from None


def _too_deep() -> GatewayError:
    return bad_request(
        "Request body is nested too deeply (the gateway accepts JSON up to about "
        "1000 levels deep).",
        code="invalid_json",
    )


def _client_key(request: web.Request, surface: Surface) -> str | None:
    """The client's own provider key, if it sent one (placeholders mean none)."""
    value = bearer(request)
    for name in surface.key_headers:
        value = value or request.headers.get(name, "").strip() or None
    return None if value is None or value.lower() in PLACEHOLDER_KEYS else value


def _upstream_key(
    request: web.Request, surface: Surface, provider: Provider, bearer_is_gateway_key: bool
) -> str | None:
    forward = provider.target.client_key == "forward" and not bearer_is_gateway_key
    key = _client_key(request, surface) if forward else None
    key = key or provider.api_key
    if key is None and provider.kind in NETWORKED and provider.requires_key:
        ref = provider.target.secret_key_ref
        where = f"set {ref.env} on the gateway" if ref else "configure secret_key_ref"
        raise GatewayError(
            401,
            f"No upstream key for target `{provider.target.id}`: {where}, "
            "or send your provider key as the bearer token.",
            type="invalid_request_error",
            code="missing_upstream_key",
        )
    return key


def _response_headers(upstream: UpstreamResponse, request_id: str) -> dict[str, str]:
    headers = dict(upstream.headers)
    headers["x-kt-request-id"] = request_id
    headers.setdefault("x-request-id", request_id)
    return headers


def _error_body(upstream_body: bytes, status: int) -> bytes:
    """An upstream error body as an OpenAI error: passed through if it is one."""
    try:
        obj = orjson.loads(upstream_body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict | str):
        return upstream_body
    text = upstream_body[:200].decode("utf-8", "replace").strip()
    return GatewayError(
        status,
        f"Upstream returned HTTP {status}" + (f": {text}" if text else "."),
        type="upstream_error",
        code=f"upstream_http_{status}",
    ).body()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Handle one chat completion request, streamed or not."""
    return await handle(request, CHAT)


async def handle(request: web.Request, surface: Surface) -> web.StreamResponse:
    """Serve one request of `surface` through the pipeline; a `GatewayError` carries the
    request id in its headers (the caller shapes its body)."""
    request_id = new_request_id()
    try:
        return await _handle(request, surface, request_id)
    except GatewayError as exc:
        exc.headers["x-kt-request-id"] = request_id
        exc.headers.setdefault("x-request-id", request_id)
        raise


async def _handle(request: web.Request, surface: Surface, request_id: str) -> web.StreamResponse:
    state = request.app[STATE]
    runtime = state.acquire()
    if runtime is None:
        state.release(None)
        raise GatewayError(503, "The gateway is not ready.", type="server_error")
    if state.inflight > runtime.max_requests:
        try:
            _refuse(request, surface, request_id, runtime, "requests", runtime.max_requests)
        finally:
            state.release(runtime)
    inflight = request.app[METRICS].gateway.inflight
    inflight.inc()
    try:
        return await _serve(request, surface, request_id, runtime)
    finally:
        inflight.dec()
        state.release(runtime)


def _refuse(
    request: web.Request,
    surface: Surface,
    request_id: str,
    runtime: Runtime,
    kind: str,
    limit: int,
) -> NoReturn:
    """Over `gateway.max_concurrent_requests`: 503 before the body is read. Logged and
    counted like any request, but not audited (shedding load must stay cheap)."""
    state = request.app[STATE]
    state.overloaded[kind] = state.overloaded.get(kind, 0) + 1
    exc = overloaded(kind, limit, runtime.retry_after)
    ctx = RequestContext(request_id, surface.endpoint, b"", "", False)
    ctx.status, ctx.error_code = exc.status, exc.code
    log_request(ctx)  # guarded: never raises
    try:
        request.app[METRICS].gateway.record(ctx, runtime)
    except Exception:
        log.exception("recording request metrics failed")
    raise exc


async def _serve(
    request: web.Request, surface: Surface, request_id: str, runtime: Runtime
) -> web.StreamResponse:
    identity = identify(request, runtime, surface.key_headers)
    group = identity.group
    ctx = RequestContext(request_id, surface.endpoint, b"", "", False)
    chain = (group or runtime.consumers.default).chain
    state = request.app[STATE]
    holds_stream = False
    try:
        if group is None:
            raise unauthorized(identity.presented)
        ctx.consumer = group.id
        ctx.headers = request.headers
        _check_content_type(request)
        ctx.raw_body = await read_body(request, runtime.max_body_bytes)
        if surface.to_chat is not None:
            ctx.raw_body = surface.to_chat(ctx.raw_body)
        head, decoded = decode_request(ctx.raw_body)
        ctx.adopt_body(decoded)
        ctx.model, ctx.stream = head.model, bool(head.stream)
        routes = runtime.planner.routes(head.model)
        if routes is None:
            raise model_not_found(head.model)
        first = routes[0]
        ctx.target_id, ctx.provider = first.provider.target.id, first.provider.kind
        ctx.upstream_model = first.upstream_model
        if not group.allows(head.model, (first.provider.target.id, first.upstream_model)):
            raise model_not_allowed(head.model, group.id)
        if ctx.stream:
            # A stream holds its slot from here (before the upstream is asked) to its end.
            if state.streams >= runtime.max_streams:
                state.overloaded["streams"] = state.overloaded.get("streams", 0) + 1
                raise overloaded("streams", runtime.max_streams, runtime.retry_after)
            state.streams += 1
            holds_stream = True
        await _admit(runtime, group)
        return await _exchange(
            request, surface, runtime, group, routes, ctx, identity.bearer_is_gateway_key
        )
    except GatewayError as exc:
        ctx.status, ctx.error_code = exc.status, exc.code
        raise
    except asyncio.CancelledError:
        ctx.error_code = "client_closed"  # the client went away; the upstream is released
        raise
    finally:
        if holds_stream:
            state.streams -= 1
        if group is not None and ctx.usage:
            await _spend(runtime, group, ctx.usage)
        if chain.has_complete_hooks:
            await chain.run_complete(ctx)
        log_request(ctx)  # guarded: never raises
        try:
            request.app[METRICS].gateway.record(ctx, runtime)
        except Exception:
            log.exception("recording request metrics failed")


async def _admit(runtime: Runtime, group: Group) -> None:
    """Take the request from `group`'s rate limits, then check its budgets (a request a
    rate limit refuses never reads the budget counters)."""
    try:
        if group.limits is not None:
            refusal = await runtime.limiter.admit(group.id, group.limits)
            if refusal is not None:
                raise rate_limited(group.id, refusal.kind, refusal.limit, refusal.retry_after)
        if group.budgets is not None:
            spent = await runtime.budgets.check(group.id, group.budgets)
            if spent is not None:
                resets = spent.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                raise budget_exceeded(
                    group.id, spent.period, spent.limit, resets, spent.retry_after
                )
    except StateUnavailable as exc:
        raise state_unavailable(group.id, exc.feature, exc.retry_after) from None


async def _spend(runtime: Runtime, group: Group, usage: dict[str, object]) -> None:
    """Charge a response's usage to `group`'s token limit and budgets."""
    tokens = usage.get("total_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        return
    if group.limits is not None:
        await runtime.limiter.spend_tokens(group.id, group.limits, tokens)
    if group.budgets is not None:
        await runtime.budgets.spend(group.id, group.budgets, tokens)


async def _exchange(
    request: web.Request,
    surface: Surface,
    runtime: Runtime,
    group: Group,
    routes: list[Route],
    ctx: RequestContext,
    bearer_is_gateway_key: bool,
) -> web.StreamResponse:
    chain = group.chain
    if chain.has_request_hooks:
        try:
            await chain.run_request(ctx)
        except PolicyViolation as exc:
            _note_block(ctx, exc)
            raise violation_error(exc.policy, exc.code, exc.message) from None
        except StateUnavailable as exc:  # pseudonyms, failing closed
            raise backend_unavailable(exc.feature, exc.retry_after) from None
    strip_usage = False
    if ctx.stream and group.needs_usage:
        options = ctx.body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage")):
            # Usage is needed (audit, token limits): ask for the final usage chunk, which
            # the rewriter reads and does not pass on to a client that did not ask.
            ctx.body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
            ctx.mark_body_changed()
            strip_usage = True
    forwarded = {k: h for k in FORWARD_HEADERS if (h := request.headers.get(k))}
    bodies: dict[str, bytes] = {}

    def body_for(model: str) -> bytes:
        """The request as sent upstream, for the model name a target is asked for."""
        body = bodies.get(model)
        if body is None:
            if model == ctx.model and not ctx.body_changed:
                body = ctx.raw_body  # the client's bytes, untouched
            else:
                body = orjson.dumps({**ctx.body, "model": model})
            bodies[model] = body
        return body

    async def send(route: Route) -> UpstreamResponse:
        provider = route.provider
        call = UpstreamCall(
            body=body_for(route.upstream_model),
            stream=ctx.stream,
            api_key=_upstream_key(request, surface, provider, bearer_is_gateway_key),
            request_id=ctx.request_id,
            headers=forwarded,
        )
        return await provider.chat(call)

    sent = time.perf_counter()
    route, upstream = await runtime.attempts.run(routes, send, ctx.attempts)
    ctx.upstream_ms = round((time.perf_counter() - sent) * 1000, 3)
    ctx.target_id, ctx.provider = route.provider.target.id, route.provider.kind
    ctx.upstream_model = route.upstream_model
    # The keys this call carried: an upstream echoing them (an error body, a header)
    # must not hand the gateway's key to the client.
    secrets = (route.provider.api_key, _client_key(request, surface))
    upstream.headers = scrub_headers(upstream.headers, secrets)
    try:
        if ctx.stream and upstream.status == 200 and upstream.is_event_stream:
            return await _relay_stream(
                request, surface, chain, upstream, ctx, group.needs_usage, strip_usage, secrets
            )
        return await _whole_response(surface, chain, upstream, ctx, group.needs_usage, secrets)
    finally:
        upstream.close()


def _note_block(ctx: RequestContext, violation: PolicyViolation) -> None:
    """The blocking policy's decision carries the code the client saw."""
    for decision in reversed(ctx.decisions):
        if decision.policy == violation.policy:
            decision.action, decision.code = "block", decision.code or violation.code
            return
    ctx.decisions.append(Decision(violation.policy, "block", violation.code))


async def _whole_response(
    surface: Surface,
    chain: CompiledChain,
    upstream: UpstreamResponse,
    ctx: RequestContext,
    needs_usage: bool,
    secrets: tuple[str | None, ...] = (),
) -> web.Response:
    body = await upstream.read()
    status = upstream.status
    if status >= 400:
        body = scrub_secrets(_error_body(body, status), secrets)
        if surface.error_from_chat is not None:
            body = surface.error_from_chat(status, body)
    elif chain.has_response_hooks or needs_usage:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GatewayError(
                502,
                "Upstream returned a body that is not JSON.",
                type="upstream_error",
                code="upstream_bad_response",
            ) from None
        if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
            ctx.usage = obj["usage"]
        if chain.has_response_hooks and isinstance(obj, dict):
            try:
                if await chain.run_response(ctx, obj):
                    body = orjson.dumps(obj)
            except PolicyViolation as v:
                _note_block(ctx, v)
                raise violation_error(v.policy, v.code, v.message) from None
    ctx.status = status
    if status < 400 and surface.from_chat is not None:
        body = surface.from_chat(body)
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers=_response_headers(upstream, ctx.request_id),
    )


async def _relay_stream(
    request: web.Request,
    surface: Surface,
    chain: CompiledChain,
    upstream: UpstreamResponse,
    ctx: RequestContext,
    needs_usage: bool,
    strip_usage: bool,
    secrets: tuple[str | None, ...] = (),
) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=_response_headers(upstream, ctx.request_id))
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    await response.prepare(request)
    ctx.status = 200
    streams = request.app[METRICS].gateway.streams
    streams.inc()
    rewriters = request.app[STATE].rewriters
    try:
        return await _relay_events(
            surface, chain, upstream, ctx, response, needs_usage, strip_usage, rewriters, secrets
        )
    finally:
        streams.dec()


async def _relay_events(
    surface: Surface,
    chain: CompiledChain,
    upstream: UpstreamResponse,
    ctx: RequestContext,
    response: web.StreamResponse,
    needs_usage: bool,
    strip_usage: bool,
    rewriters: WeakSet[StreamRewriter],
    secrets: tuple[str | None, ...] = (),
) -> web.StreamResponse:
    # Without stream filters the bytes go on unparsed, unless usage must be read.
    parse = chain.has_stream_filters or needs_usage
    rewriter = StreamRewriter(chain, ctx, strip_usage) if parse else None
    if rewriter is not None:
        rewriters.add(rewriter)  # for the hold-back gauges; gone with the request
    translator = surface.stream_from_chat(ctx) if surface.stream_from_chat else None
    first = True

    async def send(data: bytes) -> None:
        nonlocal first
        if b"error" in data:  # an upstream error event may echo the call's key
            data = scrub_secrets(data, secrets)
        if translator is not None:
            data = translator.feed(data)
        if not data:
            return
        await response.write(data)
        ctx.chunks += 1
        if first:
            first = False
            ctx.ttft_ms = round((time.perf_counter() - ctx.started) * 1000, 3)

    try:
        if rewriter is None:
            async for data in upstream.chunks():
                await send(data)
        else:
            async for data in upstream.chunks():
                await send(rewriter.feed(data))
            await send(rewriter.finish())
    except GatewayError as exc:
        ctx.error_code = exc.code
        await send(data_event(orjson.dumps({"error": exc.error_object()})))
    except PolicyViolation as v:
        ctx.error_code = v.code
        _note_block(ctx, v)
        err = violation_error(v.policy, v.code, v.message)
        await send(data_event(orjson.dumps({"error": err.error_object()})))
    if translator is not None:
        tail = translator.finish()
        if tail:
            await response.write(tail)
    await response.write_eof()
    return response
