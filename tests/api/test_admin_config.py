"""`GET /v1/kt/config`: the served config, masked, linted, per-group chains."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ktproxy.app import reload
from ktproxy.configcheck import load_config
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.harness import GATEWAY_ENV, LoopThread, RunningGateway, openai_config, serve

ADMIN_KEY = "kt-admin-config-0123456789"
ADMIN_DIGEST = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
TEAM_DIGEST = hashlib.sha256(b"kt-team-a-key-0123456789").hexdigest()
URL_PASSWORD = "hunter2-pa55w0rd-xyz"
URL_PARAM = "qp-token-value-9876"
OPENAI_LIKE = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2
ENV = {**GATEWAY_ENV, "KT_TEAM_B_KEY": "kt-team-b-key-0123456789"}


def config_text(url: str, chain_b: str = "[pii-detector]") -> str:
    extra = f"""    - id: scripted
      provider: mock
      model: scripted-model
      mock:
        mode: fixed
        reply: "use {OPENAI_LIKE} or https://svc:{URL_PASSWORD}@h.invalid/?api_key={URL_PARAM}"
"""
    return (
        openai_config(
            url, chain="[prompt-injection, pii-detector, audit-logger]", extra_target=extra
        )
        + f"""
policy:
  pii-detector: {{action: redact}}
  audit-logger: {{path: ":memory:"}}
admin:
  key: {{sha256: "{ADMIN_DIGEST}"}}   # digest of the admin key: {ADMIN_DIGEST}
consumers:
  groups:
    - id: team-a
      keys: [{{sha256: {TEAM_DIGEST}}}]
      chain: [pii-detector]
      policy:
        pii-detector: {{action: mask}}
    - id: team-b
      keys: [{{env: KT_TEAM_B_KEY}}, {{env: KT_TEAM_B_SPARE_KEY}}]
      chain: {chain_b}
"""
    )


def get_config(gw: RunningGateway, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {"x-kt-admin-key": key} if key else {}
    return httpx.get(f"{gw.base_url}/kt/config", headers=headers, timeout=10)


def test_config_shows_everything_but_secrets(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    text = config_text(upstream.url)
    gw = make_gateway(text, ENV)
    r = get_config(gw)
    assert r.status_code == 200
    raw = r.content
    for secret in (ADMIN_DIGEST, TEAM_DIGEST, URL_PASSWORD, URL_PARAM, OPENAI_LIKE):
        assert secret.encode() not in raw, secret
    assert ENV["KT_TEAM_B_KEY"].encode() not in raw and ADMIN_KEY.encode() not in raw
    for name in (b"UPSTREAM_KEY", b"KT_TEAM_B_KEY", b"KT_TEAM_B_SPARE_KEY"):
        assert name in raw  # environment variable names are not secrets
    body = r.json()
    assert body["object"] == "config"
    assert body["source"] is None  # from text, not a file
    assert body["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert body["chains"] == {
        "default": ["prompt-injection", "pii-detector", "audit-logger"],
        "team-a": ["pii-detector"],
        "team-b": ["pii-detector"],
    }
    config = body["config"]
    assert config["admin"]["key"] == {"env": None, "sha256": "********"}
    assert config["consumers"]["groups"][0]["keys"] == [{"env": None, "sha256": "********"}]
    assert config["consumers"]["groups"][1]["keys"][0]["env"] == "KT_TEAM_B_KEY"
    targets = {t["id"]: t for t in config["providers"]["targets"]}
    assert targets["primary"]["secret_key_ref"] == {"env": "UPSTREAM_KEY"}
    assert targets["primary"]["client_key"] == "forward"  # a mode, not a secret
    assert targets["scripted"]["mock"]["reply"] == (
        "use ******** or https://svc:********@h.invalid/?api_key=********"
    )
    assert config["gateway"]["max_body_bytes"] == 4 * 1024 * 1024  # defaults filled in
    assert config["policy"]["pii-detector"] == {"action": "redact"}
    # The text is the loaded one, line for line, with only the secrets replaced.
    masked = body["text"].splitlines()
    assert len(masked) == len(text.splitlines())
    assert '  key: {sha256: "********"}   # digest of the admin key: ********' in masked
    assert '      keys: [{sha256: "********"}]' in masked
    changed = [a for a, b in zip(masked, text.splitlines(), strict=True) if a != b]
    assert len(changed) == 3  # admin key, team-a key, the mock reply


def test_lint_is_the_lint_of_kt_policy_lint(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    text = config_text(upstream.url)
    gw = make_gateway(text, ENV)
    lint = get_config(gw).json()["lint"]
    assert lint["ok"] is True and lint["errors"] == 0 and lint["warnings"] == 1
    (problem,) = lint["problems"]
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "KT_TEAM_B_SPARE_KEY" in s)
    assert problem == {
        "severity": "warning",
        "path": "$.consumers.groups[1].keys[1].env",
        "line": line,
        "message": f"policy-config.yaml:{line}: warning: $.consumers.groups[1].keys[1].env: "
        "environment variable KT_TEAM_B_SPARE_KEY is not set; this key will not be accepted",
    }
    # With the variable set in the gateway's environment, lint is clean.
    gw2 = make_gateway(text, {**ENV, "KT_TEAM_B_SPARE_KEY": "another-key-0123456789"})
    assert get_config(gw2).json()["lint"] == {
        "ok": True, "errors": 0, "warnings": 0, "problems": [],
    }  # fmt: skip


def test_admin_key_is_required(make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream) -> None:
    gw = make_gateway(config_text(upstream.url), ENV)
    for key in (None, "wrong", ADMIN_DIGEST):
        r = get_config(gw, key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key"
        assert ADMIN_DIGEST.encode() not in r.content
    bearer = httpx.get(
        f"{gw.base_url}/kt/config", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )
    assert bearer.status_code == 200
    off = make_gateway(openai_config(upstream.url))
    r = get_config(off)
    assert r.status_code == 404 and r.json()["error"]["code"] == "admin_disabled"


@pytest.fixture
def file_gateway(
    loop_thread: LoopThread, tmp_path: Path, upstream: FakeOpenAIUpstream
) -> Iterator[tuple[RunningGateway, Path]]:
    """A gateway started from a file, as `kt gateway run` does (so it can reload)."""
    path = tmp_path / "policy-config.yaml"
    path.write_text(config_text(upstream.url), encoding="utf-8")

    gw = loop_thread.run(serve(load_config(path, env=ENV), ENV))
    yield gw, path
    loop_thread.run(gw.runner.cleanup())


def test_source_and_a_reload_update_the_answer(
    file_gateway: tuple[RunningGateway, Path], loop_thread: LoopThread, upstream: FakeOpenAIUpstream
) -> None:
    gw, path = file_gateway
    before: dict[str, Any] = get_config(gw).json()
    assert before["source"] == str(path)
    assert before["lint"]["problems"][0]["message"].startswith(f"{path}:")
    assert get_config(gw).json() == before  # built once, served again
    new_text = config_text(upstream.url, chain_b="[prompt-injection]").replace(
        ", {env: KT_TEAM_B_SPARE_KEY}", ""
    )
    path.write_text(new_text, encoding="utf-8")
    assert loop_thread.run(reload(gw.runner.app))
    after = get_config(gw).json()
    assert after["loaded_at"] > before["loaded_at"]
    assert after["sha256"] == hashlib.sha256(new_text.encode()).hexdigest() != before["sha256"]
    assert after["chains"]["team-b"] == ["prompt-injection"]
    assert after["lint"] == {"ok": True, "errors": 0, "warnings": 0, "problems": []}
    assert URL_PASSWORD not in after["text"] and "KT_TEAM_B_KEY" in after["text"]
