"""Shared fixtures: one background loop hosting fake upstreams and gateways."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.harness import (
    GATEWAY_ENV,
    LoopThread,
    RunningGateway,
    close_sdk_clients,
    openai_config,
    start_gateway,
)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def _session_upstream(loop_thread: LoopThread) -> Iterator[FakeOpenAIUpstream]:
    upstream = FakeOpenAIUpstream()
    loop_thread.run(upstream.start())
    yield upstream
    loop_thread.run(upstream.close())


@pytest.fixture
def upstream(_session_upstream: FakeOpenAIUpstream) -> FakeOpenAIUpstream:
    """The fake OpenAI upstream, with its queue and records cleared."""
    _session_upstream.reset()
    return _session_upstream


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def make_gateway(loop_thread: LoopThread) -> Iterator[GatewayFactory]:
    """Start gateways from config text; all are stopped after the test."""
    started: list[RunningGateway] = []

    def factory(config_text: str, env: dict[str, str] | None = None) -> RunningGateway:
        gw = loop_thread.run(start_gateway(config_text, GATEWAY_ENV if env is None else env))
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        loop_thread.run(gw.runner.cleanup())


@pytest.fixture
def gateway(make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream) -> RunningGateway:
    """A gateway with an empty chain in front of the fake upstream."""
    return make_gateway(openai_config(upstream.url))


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    close_sdk_clients()
