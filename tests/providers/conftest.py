"""Running tests on uvloop as well as on asyncio's own loop.

The gateway runs on uvloop in production, whose transports are not `asyncio.Transport`
subclasses (that already hid one bug). A test module opts in with
`pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])`; every other
asyncio test keeps asyncio's loop alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from tests.fakes.raw_upstream import RawUpstream

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    marker = item.get_closest_marker("asyncio")
    if marker is not None and marker.kwargs.get("loop_factories"):
        return LOOP_FACTORIES
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    """A loopback upstream answering with scripted bytes (tests/fakes/raw_upstream.py)."""
    async with RawUpstream() as upstream:
        yield upstream
