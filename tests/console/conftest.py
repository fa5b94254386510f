"""A real gateway for the console tests: admin key, audit store, two consumer groups.

Module-scoped, so a module's tests share one gateway (and the browser tests one
browser) instead of paying start-up per test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.harness import GATEWAY_ENV, LoopThread, RunningGateway, openai_config, start_gateway

ADMIN_KEY = "kt-console-admin-0123456789"
TEAM_A_KEY = "kt-team-a-console-0123"
TEAM_B_KEY = "kt-team-b-console-0123"
ENV = {**GATEWAY_ENV, "TEAM_A_KEY": TEAM_A_KEY, "TEAM_B_KEY": TEAM_B_KEY}


def console_config(upstream_url: str, db: Path) -> str:
    """The default chain, an audit store in `db`, two groups (team-b only redacts)."""
    admin = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    return (
        openai_config(upstream_url, chain="[prompt-injection, pii-detector, audit-logger]")
        + f"""
policy:
  pii-detector: {{action: redact}}
  audit-logger: {{path: "{db}", flush_interval_ms: 5, store_content: redacted}}
admin:
  key: {{sha256: "{admin}"}}
consumers:
  groups:
    - id: team-a
      keys: [{{env: TEAM_A_KEY}}]
    - id: team-b
      keys: [{{env: TEAM_B_KEY}}]
      chain: [pii-detector, audit-logger]
"""
    )


@pytest.fixture(scope="module")
def console_gateway(
    loop_thread: LoopThread,
    _session_upstream: FakeOpenAIUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    """One gateway for the module, in front of the (reset) fake OpenAI upstream."""
    _session_upstream.reset()
    db = tmp_path_factory.mktemp("console") / "audit.db"
    gw = loop_thread.run(start_gateway(console_config(_session_upstream.url, db), ENV))
    yield gw
    loop_thread.run(gw.runner.cleanup())
