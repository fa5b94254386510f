"""The load test's parts, without running any load.

Locust monkeypatches the standard library through gevent as soon as it is imported,
which must never happen in this process: the locustfile is only ever loaded in a
subprocess here. Everything else under `loadtests/` is plain Python and is checked
in-process: the verdicts the locust users apply, the runner's command line, and the
echo upstream's echo and PII tripwire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from benchmarks.fast_upstream import Replies
from loadtests import run
from loadtests.checks import Failed, check_blocked, check_completion, check_redacted, check_stream
from loadtests.echo_upstream import EchoUpstreamProtocol
from loadtests.report import Audit, check_audit
from loadtests.workload import NAMES, PII_VALUES, chat_body, pii_prompt
from tests.harness import run_python

USER_CLASSES = ("ChatUser", "StreamingChatUser", "PIIUser", "PIIStreamingUser", "InjectionUser")


def test_locustfile_imports_cleanly_in_a_subprocess() -> None:
    done = run_python("-W", "error", "-c", "import loadtests.locustfile")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_locust_finds_every_user_class() -> None:
    done = run_python("-m", "locust", "-f", "loadtests/locustfile.py", "--list")
    assert done.returncode == 0, done.stderr
    listed = [line.strip() for line in done.stdout.splitlines()[1:] if line.strip()]
    assert sorted(listed) == sorted(USER_CLASSES)
    assert len(USER_CLASSES) == len(NAMES)  # one class per request kind


def test_the_rest_of_loadtests_never_imports_locust() -> None:
    code = (
        "import sys, loadtests.run, loadtests.checks, loadtests.echo_upstream;"
        "bad = [m for m in ('locust', 'gevent') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = run_python("-c", code)
    assert done.returncode == 0, done.stderr


def test_runner_help() -> None:
    done = run_python("-m", "loadtests.run", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--users", "--spawn-rate", "--run-time", "--out"):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("20s", 20), ("2m", 120), ("1h30m", 5400), ("1m5s", 65)]
)
def test_run_time_forms(text: str, seconds: int) -> None:
    assert run.parse_run_time(text) == seconds


@pytest.mark.parametrize(
    "argv",
    [
        ["--users", "2"],  # fewer users than user classes
        ["--users", "100000"],
        ["--run-time", "2h"],
        ["--run-time", "soon"],
        ["--spawn-rate", "0"],
    ],
)
def test_runner_refuses_unbounded_or_bad_arguments(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        run.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def _sse(*events: dict[str, object], done: bool = True) -> bytes:
    raw = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return raw + (b"data: [DONE]\n\n" if done else b"")


def _delta(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def test_stream_check() -> None:
    assert check_stream(_sse(_delta("Hel"), _delta("lo"))) == "Hello"
    with pytest.raises(Failed, match="DONE"):
        check_stream(_sse(_delta("cut short"), done=False))
    with pytest.raises(Failed, match="error event"):
        check_stream(_sse(_delta("a"), {"error": {"message": "stopped"}}))
    with pytest.raises(Failed, match="no text"):
        check_stream(_sse())


def test_completion_check() -> None:
    ok = {"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}
    assert check_completion(200, orjson.dumps(ok)) == "hi"
    error = {"error": {"code": "upstream_error", "message": "bad gateway"}}
    with pytest.raises(Failed, match="HTTP 502: upstream_error"):
        check_completion(502, orjson.dumps(error))
    with pytest.raises(Failed, match="not a chat completion"):
        check_completion(200, b"<html>")


def test_blocked_check() -> None:
    error = {
        "message": "The request was blocked.",
        "type": "policy_violation",
        "param": None,
        "code": "prompt_injection.instruction_override",
        "policy": "prompt-injection",
    }
    check_blocked(422, orjson.dumps({"error": error}))
    with pytest.raises(Failed, match="not blocked: HTTP 200"):
        check_blocked(200, b"{}")
    with pytest.raises(Failed, match="not a prompt-injection policy_violation"):
        check_blocked(422, orjson.dumps({"error": {**error, "type": "invalid_request_error"}}))
    with pytest.raises(Failed, match="without an OpenAI error body"):
        check_blocked(422, b"blocked")


def test_redaction_check() -> None:
    prompt, (first, second) = pii_prompt(0)
    redacted = prompt.replace(first, "[REDACTED:EMAIL]").replace(second, "[REDACTED:SSN]")
    check_redacted(redacted, prompt, (first, second))
    with pytest.raises(Failed, match="PII value in the reply"):
        check_redacted(prompt.replace(first, "[REDACTED:EMAIL]"), prompt, (first, second))
    with pytest.raises(Failed, match="not the prompt"):
        check_redacted(redacted[:-3], prompt, (first, second))


def test_every_request_is_an_audit_record_or_a_counted_drop() -> None:
    problems: list[str] = []
    check_audit(100, Audit(records=100, dropped=0), problems)
    check_audit(100, Audit(records=70, dropped=30), problems)  # reported, not failed
    assert problems == []
    check_audit(100, Audit(records=70, dropped=0), problems)
    check_audit(100, Audit(records=100, dropped=None), problems)  # no /metrics: exact
    check_audit(100, Audit(records=99, dropped=None), problems)
    assert problems == [
        "70 audit records + 0 drops for 100 requests",
        "99 audit records + 0 drops for 100 requests",
    ]


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EchoUpstreamProtocol(Replies.build(3)), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1/chat/completions"
    server.close()
    await server.wait_closed()


async def test_echo_upstream(echo_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(echo_url, json=chat_body("say [REDACTED:EMAIL]", echo=True)) as r:
            assert r.status == 200
            assert check_completion(r.status, await r.read()) == "say [REDACTED:EMAIL]"
        body = chat_body("say [REDACTED:EMAIL] again", stream=True, echo=True)
        async with session.post(echo_url, json=body) as r:
            assert check_stream(await r.read()) == "say [REDACTED:EMAIL] again"
        # Without the marker, the fast upstream's canned reply.
        async with session.post(echo_url, json=chat_body("hello")) as r:
            assert check_completion(r.status, await r.read()) != "hello"


async def test_echo_upstream_refuses_pii(echo_url: str) -> None:
    before = EchoUpstreamProtocol.leaks
    async with aiohttp.ClientSession() as session:
        for stream in (False, True):
            body = chat_body(f"mail {PII_VALUES[0]}", stream=stream, echo=True)
            async with session.post(echo_url, json=body) as r:
                assert r.status == 400
                assert (await r.json())["error"]["code"] == "pii_reached_upstream"
    assert EchoUpstreamProtocol.leaks == before + 2
