"""Every Python example in README.md runs as written against a running gateway."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def config(upstream_url: str) -> str:
    return f"""
providers:
  targets:
    - {{id: primary, provider: openai, model: gpt-4o, base_url: {upstream_url},
        secret_key_ref: {{env: UPSTREAM_KEY}}}}
    - {{id: mini, provider: openai, model: gpt-4o-mini, base_url: {upstream_url},
        secret_key_ref: {{env: UPSTREAM_KEY}}}}
"""


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, index: int
) -> None:
    code = EXAMPLES[index]
    assert "http://localhost:41002" in code
    gw = make_gateway(config(upstream.url))
    if "parse(" in code:
        upstream.enqueue(
            Reply(content='{"city": "Oslo", "degrees": -3}'),
            Reply(tool_calls=[("get_weather", '{"city": "Paris"}')]),
        )
    code = code.replace("http://localhost:41002/v1", gw.base_url)
    code = code.replace("http://localhost:41002", gw.base_url.removesuffix("/v1"))
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    if "parse(" in code:
        assert "city='Oslo' degrees=-3" in out and "get_weather" in out
    elif "anthropic" in code:
        assert out.strip() == "Echo: Hello from the Anthropic SDK"
    elif "litellm" in code:
        assert out.strip() == "Echo: Hello from LiteLLM"
    elif "langchain" in code:
        assert out.strip() == "Echo: Hello from LangChain"
    elif "stream(" in code:
        assert "final: Echo: Stream with events" in out
    elif "stream=True" in code:
        assert "Echo: Stream this back" in out and "tokens:" in out
    else:
        assert out.strip() == "Echo: Hello through the gateway"
    assert len(upstream.requests) >= 1
