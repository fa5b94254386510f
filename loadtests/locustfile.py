"""Locust users for the gateway's `/v1/chat/completions`, each checking what it gets back.

Five kinds of traffic, one user class each (equal weights, so `-u 5` runs one of
each; the runner asks for at least that many):

- `ChatUser`: non-streaming completions; a 200 `chat.completion` with text.
- `StreamingChatUser`: streamed completions, read to the end; every event must be a
  JSON chunk and the last one `data: [DONE]`.
- `PIIUser` / `PIIStreamingUser`: prompts holding two PII values, sent with the echo
  upstream's marker so the reply is the prompt as the gateway forwarded it. The
  reply must hold neither value, and must be the prompt with each value replaced by
  one placeholder (for streams: the deltas joined, so hold-back is checked too).
- `InjectionUser`: injection prompts; success is an HTTP 422 with an OpenAI-shaped
  `policy_violation` error from `prompt-injection`, anything else a failure.

Any other status, a malformed body or a transport error is a failure. Streamed
requests are timed to their last byte, not to their headers.

Locust monkeypatches the standard library (gevent) when it is imported, so this
module is only ever imported by locust itself, never by the gateway's test process.

    python -m loadtests.run ...          # the usual way: gateway and upstream included
    locust -f loadtests/locustfile.py --host http://127.0.0.1:41002   # from the repo root
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from locust import FastHttpUser, events, stats, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.user.wait_time import constant_throughput

from loadtests.checks import (
    Failed,
    check_blocked,
    check_completion,
    check_redacted,
    check_stream,
    error_of,
)
from loadtests.workload import (
    BENIGN_PROMPTS,
    CHAT_PATH,
    INJECTION_PROMPTS,
    NAME_CHAT,
    NAME_INJECTION,
    NAME_PII,
    NAME_PII_STREAM,
    NAME_STREAM,
    chat_body,
    pii_prompt,
)

_pii_counter = itertools.count()


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user-rps",
        type=float,
        default=0.0,
        help="Requests per second per user; 0 (default) sends the next as soon as one ends.",
    )


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _let_csv_catch_up(environment: Any, **_kwargs: Any) -> None:
    """Give locust's CSV writer one more turn once every user has stopped.

    It rewrites `--csv` files once per interval and not again at the end, so the
    last second of requests would be missing from them.
    """
    if getattr(environment.parsed_options, "csv_prefix", None):
        # gevent's sleep (locust patched `time`): the writer greenlet runs meanwhile.
        time.sleep(stats.CSV_STATS_INTERVAL_SEC + 0.25)


def _pace(user: GatewayUser) -> float:
    """No wait by default (closed loop, as fast as each user can go); else `--user-rps`."""
    options = user.environment.parsed_options
    rps = float(getattr(options, "user_rps", 0.0) or 0.0)
    return constant_throughput(rps)(user) if rps > 0 else 0.0


_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer any"}
_STREAM_HEADERS = {**_HEADERS, "Accept": "text/event-stream"}


def _read_all(response: ResponseContextManager) -> bytes:
    chunks = response.iter_content(chunk_size=16384, decode_content=False)  # type: ignore[no-untyped-call]
    return b"".join(chunks)


def _read_stream(response: ResponseContextManager) -> str:
    """Read a streamed response to its end and return its text (see `check_stream`)."""
    status = response.status_code
    if status != 200:
        # The client has already read (and cached) the body of an error status.
        raise Failed(f"HTTP {status}: {error_of(response.content or b'')}")
    ctype = str(response.headers.get("content-type", "")) if response.headers else ""
    if not ctype.startswith("text/event-stream"):
        raise Failed(f"content-type {ctype!r}, not text/event-stream")
    raw = _read_all(response)
    response.request_meta["response_length"] = len(raw)
    return check_stream(raw)


def _any_text(text: str) -> None:
    """Plain streams need no verdict beyond `check_stream`'s."""


class GatewayUser(FastHttpUser):
    """Shared plumbing: one request, judged by a check that raises `Failed`."""

    abstract = True
    wait_time = _pace
    connection_timeout = 5.0
    network_timeout = 30.0

    def post_checked(
        self, name: str, body: dict[str, Any], check: Callable[[int, bytes], object]
    ) -> None:
        """POST a non-streaming request; `check(status, body)` decides success."""
        with self.client.post(
            CHAT_PATH,
            name=name,
            data=orjson.dumps(body).decode(),
            headers=_HEADERS,
            catch_response=True,
        ) as response:
            try:
                check(response.status_code, response.content or b"")
            except Failed as exc:
                response.failure(str(exc))
            else:
                response.success()

    def post_stream(
        self, name: str, body: dict[str, Any], check: Callable[[str], object] = _any_text
    ) -> None:
        """POST a streaming request, read it to the end; `check(text)` may add a verdict."""
        start = time.perf_counter()
        with self.client.post(
            CHAT_PATH,
            name=name,
            data=orjson.dumps(body).decode(),
            headers=_STREAM_HEADERS,
            catch_response=True,
            stream=True,
        ) as response:
            try:
                check(_read_stream(response))
            except Failed as exc:
                response.failure(str(exc))
            except OSError as exc:  # a read timeout or reset mid-stream
                response.failure(f"stream broken: {type(exc).__name__}: {exc}")
            else:
                response.success()
            finally:
                # Locust stops the clock at the headers of a streamed response; the
                # figure that matters is the whole stream.
                response.request_meta["response_time"] = (time.perf_counter() - start) * 1000


class ChatUser(GatewayUser):
    """Non-streaming chat completions with harmless prompts."""

    @task
    def chat(self) -> None:
        """One completion, checked to be a 200 `chat.completion` with text."""
        body = chat_body(random.choice(BENIGN_PROMPTS))
        self.post_checked(NAME_CHAT, body, check_completion)


class StreamingChatUser(GatewayUser):
    """Streamed chat completions with harmless prompts, read to `data: [DONE]`."""

    @task
    def chat_stream(self) -> None:
        """One stream, read to the end and checked event by event."""
        self.post_stream(NAME_STREAM, chat_body(random.choice(BENIGN_PROMPTS), stream=True))


class PIIUser(GatewayUser):
    """Non-streaming completions whose prompt (echoed back) holds PII."""

    @task
    def chat_pii(self) -> None:
        """The echo must be the prompt with both values redacted."""
        prompt, values = pii_prompt(next(_pii_counter))

        def check(status: int, body: bytes) -> None:
            check_redacted(check_completion(status, body), prompt, values)

        self.post_checked(NAME_PII, chat_body(prompt, echo=True), check)


class PIIStreamingUser(GatewayUser):
    """Streamed completions whose prompt (echoed back in 4-character deltas) holds PII."""

    @task
    def chat_pii_stream(self) -> None:
        """The joined deltas must be the prompt with both values redacted."""
        prompt, values = pii_prompt(next(_pii_counter))
        body = chat_body(prompt, stream=True, echo=True)
        self.post_stream(NAME_PII_STREAM, body, lambda text: check_redacted(text, prompt, values))


class InjectionUser(GatewayUser):
    """Injection prompts: success means the gateway refused them with a 422."""

    @task
    def chat_injection(self) -> None:
        """One injection attempt, checked to be blocked by `prompt-injection`."""
        body = chat_body(random.choice(INJECTION_PROMPTS))
        self.post_checked(NAME_INJECTION, body, check_blocked)
