"""The mock provider, through a running gateway and the OpenAI SDK."""

from __future__ import annotations

import time

from openai import OpenAI

from tests.conftest import GatewayFactory
from tests.harness import sdk_client

CONFIG = """
providers:
  targets:
    - id: echo
      provider: mock
      model: echo-model
    - id: fixed
      provider: mock
      model: fixed-model
      mock: {mode: fixed, reply: "a fixed answer from the mock", chunk_chars: 5}
    - id: slow
      provider: mock
      model: slow-model
      mock: {mode: fixed, reply: "abcdefgh", chunk_chars: 2, latency_ms: 300,
             chunk_delay_ms: 100}
"""


def test_echo_and_fixed(make_gateway: GatewayFactory) -> None:
    client: OpenAI = sdk_client(make_gateway(CONFIG, env={}))
    parts = [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]
    echo = client.chat.completions.create(
        model="echo-model",
        messages=[
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": parts},  # type: ignore[typeddict-item]
        ],
    )
    assert echo.choices[0].message.content == "part one, part two"
    assert echo.usage is not None and echo.usage.completion_tokens == 4
    fixed = client.chat.completions.create(
        model="fixed", messages=[{"role": "user", "content": "anything"}], n=2
    )
    assert [c.message.content for c in fixed.choices] == ["a fixed answer from the mock"] * 2


def test_streaming_with_usage_and_choices(make_gateway: GatewayFactory) -> None:
    client: OpenAI = sdk_client(make_gateway(CONFIG, env={}))
    stream = client.chat.completions.create(
        model="fixed-model",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        n=2,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert texts == {0: "a fixed answer from the mock"} | {1: "a fixed answer from the mock"}
    assert usage is not None and usage.completion_tokens == 12


def test_latency_and_chunk_delay(make_gateway: GatewayFactory) -> None:
    client: OpenAI = sdk_client(make_gateway(CONFIG, env={}))
    start = time.monotonic()
    arrivals = []
    for chunk in client.chat.completions.create(
        model="slow-model", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 4
    assert arrivals[0] >= 0.3
    assert arrivals[-1] - arrivals[0] >= 0.25, "chunks are paced, not sent at once"
