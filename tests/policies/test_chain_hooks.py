"""The policy hook points, driven through a running gateway by the OpenAI SDK."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from ktproxy.policies import registry
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import RunningGateway, openai_config, sdk_client
from tests.policies.sample_policies import ALL, Recorder

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def sample_policies() -> Iterator[None]:
    for cls in ALL:
        registry.register(cls)
    Recorder.seen.clear()
    yield
    for cls in ALL:
        registry.unregister(cls.name)


def wait_for_records(count: int) -> list[tuple[int | None, str | None, bool]]:
    """on_complete of a stream runs after its last byte went out: wait for it."""
    deadline = time.monotonic() + 5
    while len(Recorder.seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return Recorder.seen


def gateway_with(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, *chain: str
) -> RunningGateway:
    return make_gateway(openai_config(upstream.url, chain="[" + ", ".join(chain) + "]"))


def client(gw: RunningGateway) -> OpenAI:
    c: OpenAI = sdk_client(gw)
    return c


def test_request_block_is_422_and_nothing_leaves(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-block", "test-recorder")
    for stream in (False, True):
        with pytest.raises(openai.UnprocessableEntityError) as info:
            client(gw).chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "a forbidden thing"}],
                stream=stream,
            )
        error = info.value.body
        assert isinstance(error, dict)
        assert error["type"] == "policy_violation"
        assert error["code"] == "test_block.word" and error["policy"] == "test-block"
        assert error["param"] is None
    assert upstream.requests == []
    assert client(gw).chat.completions.create(model="gpt-4o", messages=USER).choices
    assert Recorder.seen == [
        (422, "test_block.word", False),
        (422, "test_block.word", True),
        (200, None, False),
    ]


def test_request_hook_changes_body(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-system-prompt")
    client(gw).chat.completions.create(model="gpt-4o", messages=USER, extra_body={"kt_x": 1})
    sent = upstream.requests[0].json
    assert sent["messages"] == [{"role": "system", "content": "be governed"}, *USER]
    assert sent["kt_x"] == 1


def test_response_hook_rewrites_whole_body(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-upper")
    upstream.enqueue(Reply(content="quiet words", extra_fields={"kt_extra": True}))
    raw = client(gw).chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    body = orjson.loads(raw.content)
    assert body["choices"][0]["message"]["content"] == "QUIET WORDS"
    assert body["kt_extra"] is True


@pytest.mark.parametrize("n", [1, 2])
def test_stream_filter_with_holdback(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, n: int
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-upper", "test-recorder")
    text = "streamed text, split at awkward places ✓ and ending"
    upstream.enqueue(Reply(content=text))
    stream = client(gw).chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, n=n, stream_options={"include_usage": True}
    )
    per_choice: dict[int, str] = {}
    finished: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            assert choice.index not in finished, "text after finish_reason"
            per_choice[choice.index] = per_choice.get(choice.index, "") + (
                choice.delta.content or ""
            )
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert per_choice == {i: text.upper() for i in range(n)}
    assert finished == {i: "stop" for i in range(n)}
    assert wait_for_records(1) == [(200, None, True)]


def test_filters_compose_in_chain_order(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-mask-digits", "test-upper")
    upstream.enqueue(Reply(content="call 555 0123 now"))
    with client(gw).chat.completions.stream(model="gpt-4o", messages=USER) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "CALL ### #### NOW"


def test_held_text_flushed_before_done_without_finish_chunk(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-upper")
    upstream.enqueue(Reply(content="abc def", n_chunks_then_close=100))
    with httpx.stream(
        "POST",
        f"{gw.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": USER, "stream": True},
    ) as response:
        body = b"".join(response.iter_bytes())
    chunks = [orjson.loads(e[6:]) for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "ABC DEF"


def test_stream_violation_ends_with_error_event(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-stream-stop", "test-recorder")
    upstream.enqueue(Reply(content="go go STOP more text", split=[3, 3, 4, 10]))
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client(gw).chat.completions.create(model="gpt-4o", messages=USER, stream=True):
            got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(got) == "go go "
    assert info.value.code == "test_stream_stop.stop_word"  # type: ignore[attr-defined]
    assert wait_for_records(1) == [(200, "test_stream_stop.stop_word", True)]
    assert client(gw).chat.completions.create(model="gpt-4o", messages=USER).choices


def test_failing_complete_hook_is_logged_not_raised(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    gw = gateway_with(make_gateway, upstream, "test-broken", "test-recorder")
    with caplog.at_level(logging.ERROR, logger="ktproxy.policies"):
        out = client(gw).chat.completions.create(model="gpt-4o", messages=USER)
    assert out.choices[0].message.content
    assert Recorder.seen == [(200, None, False)], "hooks after the failing one still run"
    assert any("test-broken" in r.getMessage() for r in caplog.records)


def test_policy_options_are_typed(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    config = openai_config(upstream.url, chain="[test-block]")
    config += "policy:\n  test-block: {word: hush}\n"
    gw = make_gateway(config)
    with pytest.raises(openai.UnprocessableEntityError):
        client(gw).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hush now"}]
        )
    assert (
        client(gw)
        .chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "forbidden is fine now"}]
        )
        .choices
    )
