"""Faults from upstreams, one case each, through a real gateway and the real `openai` SDK.

Every case checks the three things a fault must leave behind: the client's outcome (an
OpenAI error with the status and code DESIGN §1 defines, or for a stream already under
way the relayed events, then an SSE error event and no `[DONE]`), the audit record
saying what happened (status, error code, streamed, attempts), and an upstream pool
with nothing in use or waiting, ready for the next good request, which is then sent.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from ktproxy.audit.record import AuditRecord
from ktproxy.audit.sink import Query
from ktproxy.audit.sqlite_sink import SQLiteSink
from ktproxy.wire.sse import MAX_EVENT_BYTES
from tests.conftest import GatewayFactory
from tests.fakes.openai_bodies import chunk_event as event
from tests.fakes.openai_bodies import completion
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.raw_upstream import (
    Peer,
    RawUpstream,
    Reply,
    hold,
    then_close,
    then_hold,
    then_reset,
)
from tests.harness import LoopThread, RunningGateway, free_port, sdk_client

USER = [{"role": "user", "content": "hello"}]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
END = b"0\r\n\r\n"
DONE = b"data: [DONE]\n\n"


def chunk(data: bytes) -> bytes:
    """One piece of chunked transfer coding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def reply(status: int, body: bytes, *headers: str, ctype: str = "application/json") -> bytes:
    """A whole response with a Content-Length (keep-alive)."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}", *headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


COMPLETION = orjson.dumps(completion("fine"))
GOOD = reply(200, COMPLETION)
GOOD_STREAM = SSE_HEAD + chunk(event("a") + event("b") + DONE) + END


def error_reply(status: int, retry_after: str | None = None) -> bytes:
    body = orjson.dumps(
        {"error": {"message": f"busy ({status})", "type": "server_error", "code": None}}
    )
    extra = [f"Retry-After: {retry_after}"] if retry_after is not None else []
    return reply(status, body, *extra)


# -- fixtures ---------------------------------------------------------------------------


def serve_raw(loop_thread: LoopThread) -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    loop_thread.run(upstream.start())
    yield upstream
    loop_thread.run(upstream.close())


@pytest.fixture
def raw(loop_thread: LoopThread) -> Iterator[RawUpstream]:
    yield from serve_raw(loop_thread)


@pytest.fixture
def raw_backup(loop_thread: LoopThread) -> Iterator[RawUpstream]:
    yield from serve_raw(loop_thread)


def config(
    url: str,
    db: Path | None,
    *,
    first_byte: float = 5,
    idle: float = 5,
    target_extra: str = "",
    extra: str = "",
) -> str:
    chain = "[audit-logger]" if db is not None else "[]"
    audit = f'policy:\n  audit-logger: {{path: "{db}", flush_interval_ms: 5}}' if db else ""
    return f"""
providers:
  timeouts: {{connect: 2, first_byte: {first_byte}, idle: {idle}, total: 60}}
  targets:
    - {{id: primary, provider: openai, model: gpt-4o, base_url: "{url}",
        secret_key_ref: {{env: UPSTREAM_KEY}}, max_connections: 4{target_extra}}}
    - {{id: local, provider: mock, model: mock-model}}
{extra}
policies:
  chain: {chain}
{audit}
"""


@dataclass
class Faulty:
    """A gateway (audit to SQLite) in front of a scripted upstream."""

    gw: RunningGateway
    db: Path

    def client(self) -> openai.OpenAI:
        c: openai.OpenAI = sdk_client(self.gw, timeout=30)
        return c

    def record(self, request_id: str) -> AuditRecord:
        """The audit record of one request (waits for the writer, bounded)."""
        deadline = time.monotonic() + 10
        while True:
            sink = SQLiteSink(self.db)
            try:
                found = sink.query(Query(request_id=request_id)).records
            finally:
                sink.close()
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(found) == 1, f"no audit record for {request_id}"
        return found[0]


@pytest.fixture
def faulty(make_gateway: GatewayFactory, raw: RawUpstream, tmp_path: Path) -> Faulty:
    db = tmp_path / "audit.db"
    return Faulty(make_gateway(config(raw.url, db, first_byte=0.5, idle=0.5)), db)


def attempts(record: AuditRecord) -> list[tuple[str, str, int | None]]:
    return [(a.target, a.outcome, a.status) for a in record.attempts]


def pool_settles(gw: RunningGateway) -> None:
    """Nothing in use or waiting in any upstream pool (polled, bounded)."""
    deadline = time.monotonic() + 5
    while True:
        stats = gw.state.pool.stats()
        if all(s.in_use == 0 and s.waiting == 0 for s in stats):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"upstream connections leaked: {stats}")
        time.sleep(0.01)


def serves_next(f: Faulty, raw: RawUpstream | None, model: str = "gpt-4o") -> None:
    """The pool is clean and the next good request gets its answer."""
    pool_settles(f.gw)
    if raw is not None:
        raw.enqueue(GOOD)
    out = f.client().chat.completions.create(model=model, messages=USER)
    assert out.choices[0].message.content
    pool_settles(f.gw)


def fails(f: Faulty, stream: bool) -> openai.APIStatusError:
    """The SDK's error for a request that fails before any response body."""
    with pytest.raises(openai.APIStatusError) as info:
        f.client().chat.completions.create(model="gpt-4o", messages=USER, stream=stream)
    return info.value


def request_id(exc: openai.APIStatusError) -> str:
    rid: str = exc.response.headers["x-kt-request-id"]
    return rid


def stream_fails(f: Faulty) -> tuple[list[str], openai.APIError, str]:
    """Stream through the SDK until its error: (texts before it, the error, request id)."""
    stream = f.client().chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    rid = stream.response.headers["x-kt-request-id"]
    texts: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in stream:
            if c.choices and c.choices[0].delta.content:
                texts.append(c.choices[0].delta.content)
    return texts, info.value, rid


def error_code(exc: openai.APIError) -> str:
    body = exc.body
    assert isinstance(body, dict), body
    code = body.get("code")
    assert isinstance(code, str), body
    return code


def raw_stream(gw: RunningGateway) -> tuple[httpx.Response, bytes]:
    """A streamed request's response (status, headers) and raw body bytes (for what the
    SDK hides)."""
    with httpx.stream(
        "POST",
        f"{gw.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": USER, "stream": True},
        timeout=30,
    ) as response:
        return response, b"".join(response.iter_bytes())


def sse_events(body: bytes) -> list[bytes]:
    """The body's events; each must be whole (the gateway never sends half an event)."""
    assert body.endswith(b"\n\n"), body[-200:]
    return [e for e in body.split(b"\n\n") if e]


def drip(data: bytes, every: float) -> Callable[[Peer], Any]:
    """Write `data` a byte at a time, `every` seconds apart (until the client leaves)."""

    async def action(peer: Peer) -> None:
        for i in range(len(data)):
            await peer.send(data[i : i + 1])
            await asyncio.sleep(every)
        await hold(peer)

    return action


# -- connection-level faults ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_connection_refused(make_gateway: GatewayFactory, tmp_path: Path, stream: bool) -> None:
    db = tmp_path / "a.db"
    f = Faulty(make_gateway(config(f"http://127.0.0.1:{free_port()}", db)), db)
    exc = fails(f, stream)
    assert exc.status_code == 502 and exc.code == "upstream_unavailable"  # type: ignore[attr-defined]
    assert "cannot connect" in exc.message
    record = f.record(request_id(exc))
    assert (record.status, record.error, record.streamed) == (502, "upstream_unavailable", stream)
    assert attempts(record) == [("primary", "connect", 502)]
    serves_next(f, None, model="mock-model")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_reset_before_headers(faulty: Faulty, raw: RawUpstream, stream: bool) -> None:
    raw.enqueue(then_reset(b""))
    exc = fails(faulty, stream)
    assert exc.status_code == 502 and exc.code == "upstream_unavailable"  # type: ignore[attr-defined]
    record = faulty.record(request_id(exc))
    assert (record.status, record.error) == (502, "upstream_unavailable")
    assert attempts(record) == [("primary", "connect", 502)]
    serves_next(faulty, raw)


def test_reset_mid_body(faulty: Faulty, raw: RawUpstream) -> None:
    raw.enqueue(then_reset(reply(200, COMPLETION)[:-20]))
    exc = fails(faulty, stream=False)
    assert exc.status_code == 502 and exc.code == "upstream_unavailable"  # type: ignore[attr-defined]
    assert "cut short" in exc.message
    record = faulty.record(request_id(exc))
    assert (record.status, record.error, record.streamed) == (502, "upstream_unavailable", False)
    serves_next(faulty, raw)


# -- timeouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_stall_before_first_byte(faulty: Faulty, raw: RawUpstream, stream: bool) -> None:
    raw.enqueue(hold)
    exc = fails(faulty, stream)
    assert exc.status_code == 504
    assert exc.code == "upstream_timeout.first_byte"  # type: ignore[attr-defined]
    record = faulty.record(request_id(exc))
    assert (record.status, record.error) == (504, "upstream_timeout.first_byte")
    assert attempts(record) == [("primary", "timeout", 504)]
    serves_next(faulty, raw)


def test_head_dribbled_a_byte_at_a_time_is_bounded_by_first_byte(
    faulty: Faulty, raw: RawUpstream
) -> None:
    # ~100 head bytes at 50 ms each would take 5 s; first_byte (0.5 s) is a deadline
    # from the request, not re-armed by each partial head byte (total is 60 s).
    raw.enqueue(drip(reply(200, COMPLETION), 0.05))
    exc = fails(faulty, stream=False)
    assert exc.status_code == 504
    assert exc.code == "upstream_timeout.first_byte"  # type: ignore[attr-defined]
    record = faulty.record(request_id(exc))
    assert (record.status, record.error) == (504, "upstream_timeout.first_byte")
    serves_next(faulty, raw)


# -- streams failing after the 200 went out ---------------------------------------------

STREAM_FAULTS: dict[str, tuple[Reply, str]] = {
    "reset": (then_reset(SSE_HEAD + chunk(event("a")) + chunk(event("b"))), "upstream_unavailable"),
    "idle-stall": (
        then_hold(SSE_HEAD + chunk(event("a")) + chunk(event("b"))),
        "upstream_timeout.idle",
    ),
    "truncated-clean-close": (
        SSE_HEAD + chunk(event("a")) + chunk(event("b")) + END,
        "upstream_stream_truncated",
    ),
    "truncated-until-close": (
        then_close(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + event("a") + event("b")
        ),
        "upstream_stream_truncated",
    ),
    "truncated-mid-event": (
        SSE_HEAD + chunk(event("a") + event("b") + b'data: {"id": "chatcmpl-1", "cho') + END,
        "upstream_stream_truncated",
    ),
    "reset-mid-event": (
        then_reset(SSE_HEAD + chunk(event("a") + event("b") + b'data: {"id": "chat')),
        "upstream_unavailable",
    ),
    "gigantic-event": (
        SSE_HEAD
        + chunk(event("a") + event("b"))
        + chunk(b"data: " + b"x" * (20 << 20) + b"\n\n")
        + chunk(DONE)
        + END,
        "upstream_bad_response",
    ),
}


@pytest.mark.parametrize("fault", STREAM_FAULTS)
def test_stream_failing_midway_ends_with_an_error_event(
    faulty: Faulty, raw: RawUpstream, fault: str
) -> None:
    script, code = STREAM_FAULTS[fault]
    raw.enqueue(script)
    texts, exc, rid = stream_fails(faulty)
    assert texts == ["a", "b"], "the events before the fault reach the client"
    assert error_code(exc) == code
    if fault == "gigantic-event":
        assert f"more than {MAX_EVENT_BYTES} bytes" in exc.message
    record = faulty.record(rid)
    assert (record.status, record.error, record.streamed) == (200, code, True)
    assert attempts(record) == [("primary", "ok", 200)]
    serves_next(faulty, raw)


@pytest.mark.parametrize("fault", STREAM_FAULTS)
def test_stream_fault_bytes_without_policies(
    make_gateway: GatewayFactory, raw: RawUpstream, fault: str
) -> None:
    """Without a policy parsing the stream (bytes relayed unparsed) the client sees the
    same: whole events only, the error event last, no [DONE]."""
    gw = make_gateway(config(raw.url, None, first_byte=0.5, idle=0.5))
    script, code = STREAM_FAULTS[fault]
    raw.enqueue(script)
    response, body = raw_stream(gw)
    assert response.status_code == 200
    events = sse_events(body)
    assert events[:2] == [event("a")[:-2], event("b")[:-2]]
    assert len(events) == 3 and DONE not in body
    assert orjson.loads(events[2][6:])["error"]["code"] == code
    pool_settles(gw)
    raw.enqueue(GOOD_STREAM)
    response, body = raw_stream(gw)
    assert response.status_code == 200 and body.endswith(DONE)


# -- malformed but whole streams: relayed unchanged -------------------------------------


@pytest.mark.parametrize("audited", [True, False], ids=["parsed", "unparsed"])
@pytest.mark.parametrize(
    "odd",
    [
        b"this line has no colon\n\n",
        b": a comment\nid: 7\nretry: 100\n\n",
        b"data: {not json at all\n\n",
        b'data: {"choices": "not a list"}\n\n',
        b"data: \xff\xfe not utf-8\n\n",
    ],
    ids=["no-colon", "comment-id-retry", "bad-json", "wrong-shape", "not-utf8"],
)
def test_malformed_events_are_relayed_unchanged(
    make_gateway: GatewayFactory,
    raw: RawUpstream,
    tmp_path: Path,
    odd: bytes,
    audited: bool,
) -> None:
    """DESIGN §1: what the provider returns reaches the client unchanged; the gateway does
    not judge events it need not understand (a client's SSE parser does)."""
    db = tmp_path / "audit.db" if audited else None
    gw = make_gateway(config(raw.url, db))
    raw.enqueue(SSE_HEAD + chunk(event("a")) + chunk(odd) + chunk(event("b") + DONE) + END)
    response, body = raw_stream(gw)
    rid = response.headers["x-kt-request-id"]
    assert response.status_code == 200
    assert body == event("a") + odd + event("b") + DONE
    if db is not None:
        record = Faulty(gw, db).record(rid)
        assert (record.status, record.error, record.streamed) == (200, None, True)
    pool_settles(gw)


# -- wrong content types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "answer", "fragment"),
    [
        (True, reply(200, b"<html>hi</html>", ctype="text/html"), "answered a stream request"),
        (True, reply(200, COMPLETION), "with application/json"),
        (False, SSE_HEAD + chunk(event("a") + DONE) + END, "returned text/event-stream"),
        (False, reply(200, b"<html>hi</html>", ctype="text/html"), "returned text/html"),
    ],
    ids=["html-for-stream", "json-for-stream", "sse-for-whole", "html-for-whole"],
)
def test_wrong_content_type_is_502(
    faulty: Faulty, raw: RawUpstream, stream: bool, answer: bytes, fragment: str
) -> None:
    raw.enqueue(answer)
    exc = fails(faulty, stream)
    assert exc.status_code == 502
    assert exc.code == "upstream_bad_response"  # type: ignore[attr-defined]
    assert fragment in exc.message
    record = faulty.record(request_id(exc))
    assert (record.status, record.error, record.streamed) == (502, "upstream_bad_response", stream)
    serves_next(faulty, raw)


# -- storms -----------------------------------------------------------------------------

STORM = 12


def concurrently(n: int, call: Callable[[], Any]) -> list[Any]:
    """Run `call` in `n` threads at once; their results or exceptions."""
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait(10)
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_429_storm_passes_retry_after_through(
    make_gateway: GatewayFactory, raw: RawUpstream, tmp_path: Path, stream: bool
) -> None:
    db = tmp_path / "audit.db"
    # Two connections for twelve requests: most wait for one, none may be lost.
    f = Faulty(
        make_gateway(config(raw.url, db).replace("max_connections: 4", "max_connections: 2")), db
    )
    raw.enqueue(*[error_reply(429, "7")] * STORM)
    client = f.client()

    def call() -> Any:
        return client.chat.completions.create(model="gpt-4o", messages=USER, stream=stream)

    results = concurrently(STORM, call)
    assert all(isinstance(r, openai.RateLimitError) for r in results), results
    for exc in results:
        assert exc.response.headers["retry-after"] == "7"
        record = f.record(request_id(exc))
        assert (record.status, record.streamed) == (429, stream)
        assert attempts(record) == [("primary", "429", 429)]
    serves_next(f, raw)


def test_5xx_storm_with_retries_and_fallback(
    make_gateway: GatewayFactory, raw: RawUpstream, raw_backup: RawUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "audit.db"
    text = config(
        raw.url,
        db,
        extra=f"""    - {{id: backup, provider: openai, model: gpt-4o-backup,
        base_url: "{raw_backup.url}", secret_key_ref: {{env: UPSTREAM_KEY}}, max_connections: 2}}
routing:
  retries: {{attempts: 2, backoff_ms: 1, max_backoff_ms: 5}}
  circuit_breaker: null  # every request tries both targets twice: countable
  models:
    - name: gpt-4o
      targets: [primary, backup]""",
    ).replace("max_connections: 4", "max_connections: 2")
    f = Faulty(make_gateway(text), db)
    raw.enqueue(*[error_reply(500), error_reply(503, "1")] * STORM)
    raw_backup.enqueue(*[error_reply(503, "1")] * (2 * STORM))
    client = f.client()
    results = concurrently(
        STORM, lambda: client.chat.completions.create(model="gpt-4o", messages=USER)
    )
    assert all(isinstance(r, openai.InternalServerError) for r in results), results
    for exc in results:
        assert exc.status_code == 503
        record = f.record(request_id(exc))
        assert record.status == 503
        assert [(a.target, a.outcome) for a in record.attempts] == [
            ("primary", "5xx"), ("primary", "5xx"), ("backup", "5xx"), ("backup", "5xx"),
        ]  # fmt: skip
    assert len(raw.requests) == 2 * STORM and len(raw_backup.requests) == 2 * STORM
    pool_settles(f.gw)
    raw.enqueue(GOOD)
    assert f.client().chat.completions.create(model="gpt-4o", messages=USER).choices
    pool_settles(f.gw)


# -- decompression bombs ----------------------------------------------------------------


def test_gzip_bomb_is_refused_not_expanded(faulty: Faulty, raw: RawUpstream) -> None:
    import gzip

    bomb = gzip.compress(b"{" + b" " * (80 << 20), compresslevel=9)  # ~80 KiB -> 80 MiB
    raw.enqueue(
        reply(200, bomb, "Content-Encoding: gzip"),
    )
    exc = fails(faulty, stream=False)
    assert exc.status_code == 502 and exc.code == "upstream_unavailable"  # type: ignore[attr-defined]
    assert "too large" in exc.message
    record = faulty.record(request_id(exc))
    assert (record.status, record.error) == (502, "upstream_unavailable")
    serves_next(faulty, raw)


# -- TLS --------------------------------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    good: tuple[Path, Path]  # cert, key for 127.0.0.1 / localhost
    other_name: tuple[Path, Path]  # for other.example only
    expired: tuple[Path, Path]


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA and server certificates, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "2",
             "-subj", "/CN=ktproxy test CA")  # fmt: skip

    def leaf(name: str, san: str, days: str) -> tuple[Path, Path]:
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("req", *ec, "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
                 "-subj", f"/CN={name}")  # fmt: skip
        _openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem",
                 "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / f"{name}.pem",
                 "-days", days, "-extfile", d / f"{name}.ext")  # fmt: skip
        return d / f"{name}.pem", d / f"{name}.key"

    return Certs(
        d / "ca.pem",
        leaf("good", "IP:127.0.0.1,DNS:localhost", "2"),
        leaf("other", "DNS:other.example", "2"),
        leaf("expired", "IP:127.0.0.1,DNS:localhost", "-1"),
    )


def tls_upstream(loop_thread: LoopThread, pair: tuple[Path, Path]) -> RawUpstream:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*pair)
    upstream = RawUpstream(tls=context)
    loop_thread.run(upstream.start())
    return upstream


@pytest.fixture
def tls_servers(loop_thread: LoopThread) -> Iterator[list[RawUpstream]]:
    servers: list[RawUpstream] = []
    yield servers
    for s in servers:
        loop_thread.run(s.close())


def tls_gateway(make_gateway: GatewayFactory, url: str, db: Path, tls: str | None) -> Faulty:
    extra = f", tls: {tls}" if tls else ""
    return Faulty(make_gateway(config(url, db, target_extra=extra)), db)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tls_with_a_private_ca(
    make_gateway: GatewayFactory,
    loop_thread: LoopThread,
    tls_servers: list[RawUpstream],
    certs: Certs,
    tmp_path: Path,
    stream: bool,
) -> None:
    upstream = tls_upstream(loop_thread, certs.good)
    tls_servers.append(upstream)
    f = tls_gateway(make_gateway, upstream.url, tmp_path / "a.db", f'{{ca_file: "{certs.ca}"}}')
    upstream.enqueue(GOOD_STREAM if stream else GOOD)
    out = f.client().chat.completions.create(model="gpt-4o", messages=USER, stream=stream)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in out if c.choices) == "ab"
    else:
        assert out.choices[0].message.content == "fine"
    serves_next(f, upstream)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("system-store", "certificate verify failed"),
        ("wrong-name", "certificate verify failed: IP address mismatch"),
        ("expired", "certificate verify failed: certificate has expired"),
        ("plain-http", "TLS handshake failed"),
    ],
)
def test_tls_failures_are_502(
    make_gateway: GatewayFactory,
    loop_thread: LoopThread,
    tls_servers: list[RawUpstream],
    upstream: FakeOpenAIUpstream,
    certs: Certs,
    tmp_path: Path,
    case: str,
    fragment: str,
) -> None:
    ca = f'{{ca_file: "{certs.ca}"}}'
    if case == "plain-http":
        url, tls = upstream.url.replace("http://", "https://"), ca
    else:
        pair = {"system-store": certs.good, "wrong-name": certs.other_name}.get(case, certs.expired)
        server = tls_upstream(loop_thread, pair)
        tls_servers.append(server)
        url, tls = server.url, (None if case == "system-store" else ca)
    f = tls_gateway(make_gateway, url, tmp_path / "a.db", tls)
    exc = fails(f, stream=False)
    assert exc.status_code == 502 and exc.code == "upstream_unavailable"  # type: ignore[attr-defined]
    assert "TLS handshake failed" in exc.message and fragment in exc.message
    assert "Traceback" not in exc.message
    record = f.record(request_id(exc))
    assert (record.status, record.error) == (502, "upstream_unavailable")
    assert attempts(record) == [("primary", "connect", 502)]
    serves_next(f, None, model="mock-model")


def test_tls_verify_false_connects_to_an_unknown_ca(
    make_gateway: GatewayFactory,
    loop_thread: LoopThread,
    tls_servers: list[RawUpstream],
    certs: Certs,
    tmp_path: Path,
) -> None:
    upstream = tls_upstream(loop_thread, certs.other_name)
    tls_servers.append(upstream)
    f = tls_gateway(make_gateway, upstream.url, tmp_path / "a.db", "{verify: false}")
    upstream.enqueue(GOOD)
    assert f.client().chat.completions.create(model="gpt-4o", messages=USER).choices
    pool_settles(f.gw)


def test_targets_with_different_tls_settings_get_their_own_pools(
    make_gateway: GatewayFactory,
    loop_thread: LoopThread,
    tls_servers: list[RawUpstream],
    certs: Certs,
    tmp_path: Path,
) -> None:
    upstream = tls_upstream(loop_thread, certs.good)
    tls_servers.append(upstream)
    extra = f"""    - {{id: strict, provider: openai, model: gpt-4o-strict,
        base_url: "{upstream.url}", secret_key_ref: {{env: UPSTREAM_KEY}}}}"""
    text = config(upstream.url, tmp_path / "a.db", target_extra=f', tls: {{ca_file: "{certs.ca}"}}',
                  extra=extra)  # fmt: skip
    f = Faulty(make_gateway(text), tmp_path / "a.db")
    upstream.enqueue(GOOD)
    assert f.client().chat.completions.create(model="gpt-4o", messages=USER).choices
    # Same origin, system store: a pool of its own, whose handshake fails.
    exc = fails_model(f, "gpt-4o-strict")
    assert exc.status_code == 502 and "certificate verify failed" in exc.message
    assert f.gw.state.pool.pool_count() == 2
    assert len(f.gw.state.pool.stats()) == 1  # one origin for /metrics
    pool_settles(f.gw)


def fails_model(f: Faulty, model: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        f.client().chat.completions.create(model=model, messages=USER)
    return info.value


def test_lint_checks_tls(certs: Certs, tmp_path: Path) -> None:
    from ktproxy.configcheck import check_text
    from tests.harness import GATEWAY_ENV

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")

    def problems(url: str, tls: str) -> list[tuple[str, str]]:
        text = config(url, None, target_extra=f", tls: {tls}")
        _, found = check_text(text, env=GATEWAY_ENV)
        return [(p.severity, p.message) for p in found]

    https = "https://127.0.0.1:1"
    assert problems(https, f'{{ca_file: "{certs.ca}"}}') == []
    assert problems(https, f'{{ca_file: "{tmp_path / "nope.pem"}"}}') == [
        ("error", f"no such file: {str(tmp_path / 'nope.pem')!r}")
    ]
    ((severity, message),) = problems(https, f'{{ca_file: "{junk}"}}')
    assert severity == "error" and message.startswith("not a PEM CA bundle")
    ((severity, message),) = problems(https, "{verify: false}")
    assert severity == "warning" and message.startswith("certificate verification is off")
    assert problems("http://127.0.0.1:1", "{verify: true}") == [
        ("warning", "only used with an https:// base_url")
    ]
    ((severity, message),) = problems(https, "{verfiy: false}")
    assert (severity, message) == ("error", "unknown key; expected one of ca_file, verify")
