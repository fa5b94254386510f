"""The policy config: loading, linting and every message a user reads.

Messages are asserted exactly as `kt policy lint` prints them
(`file:line: $.path: message`, warnings as `file:line: warning: $.path: message`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ktproxy.config import (
    Config,
    Gateway,
    MockOptions,
    Pack,
    Providers,
    SecretRef,
    Target,
    Timeouts,
    normalise_base_url,
    target_timeouts,
    to_builtins,
)
from ktproxy.configcheck import (
    ConfigError,
    LoadedConfig,
    Problem,
    check_file,
    check_text,
    load_config,
)
from ktproxy.policies import registry as policy_registry
from ktproxy.policies.audit_logger import AuditOptions
from ktproxy.policies.base import Policy
from ktproxy.policies.pii_detector import EntityName, PIIOptions
from ktproxy.yamlsource import load_yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(__file__).resolve().parent / "configs"
SEED = CONFIGS / "seed.yaml"
BAD_EVERYTHING = CONFIGS / "bad-everything.yaml"
EXAMPLE = ROOT / "examples" / "policy-config.yaml"
DESIGN = Path("/work/shared/DESIGN.md")

# A valid config to build focused cases on: one mock target, nothing else.
MINIMAL = """\
providers:
  targets:
    - {id: echo, provider: mock, model: gpt-4o}
"""

SEED_KEY_WARNING = (
    "seed.yaml:8: warning: $.providers.targets[0].secret_key_ref.env: environment variable "
    "OPENAI_API_KEY is not set; requests to this target need the client to send its own "
    "provider key"
)
TARGET_KEYS = (
    "id, provider, model, base_url, secret_key_ref, client_key, timeouts, max_connections, mock, "
    "anthropic, vertex, ollama, tls"
)
TOP_KEYS = "providers, pack, gateway, policies, routing, consumers, admin, state, policy"
KNOWN_PROVIDERS = "anthropic, google-vertex, mock, ollama, openai"
# Derived from the registry, so that a policy landing changes only the tests that pin
# the seed and the every-problem file.
KNOWN_POLICIES = ", ".join(sorted(policy_registry.POLICIES) + sorted(policy_registry.PLANNED))
AVAILABLE_POLICIES = ", ".join(sorted(policy_registry.POLICIES))
PLANNED_POLICIES = sorted(policy_registry.PLANNED)
ENTITY_NAMES = ", ".join(get_args(EntityName))


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def lint(
    text: str,
    env: Mapping[str, str] | None = None,
    *,
    for_start: bool = False,
    filename: str = "c.yaml",
) -> list[str]:
    """The lines `kt policy lint` would print for `text` (without the summary)."""
    loaded, problems = check_text(text, env={} if env is None else env, for_start=for_start)
    assert (loaded is None) == any(p.severity == "error" for p in problems)
    return [p.format(filename) for p in problems]


def load_ok(text: str, env: Mapping[str, str] | None = None) -> LoadedConfig:
    loaded, problems = check_text(text, env={} if env is None else env)
    assert loaded is not None, [p.format("c.yaml") for p in problems]
    return loaded


@pytest.fixture
def planned() -> str:
    """Some policy that is part of the config format but not in this release."""
    if not policy_registry.PLANNED:
        pytest.skip("every policy is available")
    return min(policy_registry.PLANNED)


# -- the seed config of DESIGN §2 ---------------------------------------------------------


def test_seed_fixture_is_the_design_doc_block() -> None:
    if not DESIGN.exists():
        pytest.skip("DESIGN.md is not available here")
    section = DESIGN.read_text(encoding="utf-8").split("## 2. The policy config", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    assert SEED.read_text(encoding="utf-8") == match.group(1)


def test_seed_is_structurally_valid() -> None:
    data, _ = load_yaml(SEED.read_text(encoding="utf-8"))
    config = msgspec.convert(data, Config)
    assert config.pack == Pack(name="python-app-governance", version="1.0.0", enabled=True)
    assert config.providers.targets == [
        Target(
            id="openai-primary",
            provider="openai",
            model="gpt-4o",
            base_url="https://api.openai.com",
            secret_key_ref=SecretRef(env="OPENAI_API_KEY"),
        )
    ]
    assert config.policies.chain == ["prompt-injection", "pii-detector", "audit-logger"]
    assert config.policy == {
        "pii-detector": {"action": "redact"},
        "audit-logger": {"retention_days": 30},
    }


def test_seed_lint_reports_only_the_missing_key() -> None:
    lines = lint(SEED.read_text(encoding="utf-8"), env={}, filename="seed.yaml")
    assert lines == [SEED_KEY_WARNING]


def test_seed_lint_with_the_key_set_is_clean() -> None:
    lines = lint(SEED.read_text(encoding="utf-8"), {"OPENAI_API_KEY": "sk-x"}, filename="seed.yaml")
    assert lines == []


def test_seed_pii_detector_options_are_accepted() -> None:
    # The seed without its planned policies loads, with its pii-detector options decoded.
    text = SEED.read_text(encoding="utf-8")
    text = text.replace("[prompt-injection, pii-detector, audit-logger]", "[pii-detector]")
    text = text.replace("  audit-logger: {retention_days: 30}\n", "")
    loaded = load_ok(text, {"OPENAI_API_KEY": "sk-x"})
    assert loaded.warnings == ()
    assert loaded.config.policies.chain == ["pii-detector"]
    assert loaded.policy_options == {"pii-detector": PIIOptions(action="redact")}


def test_seed_loads_at_start_with_every_policy() -> None:
    loaded = load_config(SEED, env={})
    assert loaded.filename == str(SEED)
    assert loaded.policy_options == {
        "pii-detector": PIIOptions(action="redact"),
        "audit-logger": AuditOptions(retention_days=30),
    }


# -- a file with every kind of problem -------------------------------------------------------

BAD_EVERYTHING_REPORT = [
    "bad.yaml:2: $.pack.owner: unknown key; expected one of name, version, enabled",
    "bad.yaml:5: $.gateway.port: expected `int` >= 1; got 0",
    "bad.yaml:6: $.gateway.log_level: expected one of debug, info, warning, error; got 'loud'",
    "bad.yaml:7: $.gateway.max_body_bytes: expected `int` >= 1024; got 10",
    "bad.yaml:9: $.providers.timeouts.connect: expected `float`; got `str`",
    "bad.yaml:9: $.providers.timeouts.total: expected `float` > 0.0; got -1",
    "bad.yaml:10: $.providers.retries: unknown key; expected one of targets, timeouts",
    "bad.yaml:15: $.providers.targets[0].base_url: expected an http:// or https:// URL with a "
    "host; got 'ftp://api.openai.com'",
    "bad.yaml:16: warning: $.providers.targets[0].secret_key_ref.env: environment variable "
    "KT_TEST_UNSET_KEY is not set; requests to this target need the client to send its own "
    "provider key",
    "bad.yaml:17: $.providers.targets[0].client_key: expected one of forward, ignore; got 'maybe'",
    "bad.yaml:18: $.providers.targets[0].mock: only valid for provider 'mock'",
    f"bad.yaml:19: $.providers.targets[0].colour: unknown key; expected one of {TARGET_KEYS}",
    "bad.yaml:20: $.providers.targets[1]: missing required key 'base_url' (provider 'anthropic')",
    "bad.yaml:20: $.providers.targets[1].id: duplicate target id 'primary' "
    "(first defined on line 12)",
    "bad.yaml:23: $.providers.targets[2]: missing required key 'base_url' (provider "
    "'google-vertex')",
    "bad.yaml:26: $.providers.targets[3]: missing required key 'base_url' (provider 'ollama')",
    "bad.yaml:28: $.providers.targets[3].model: expected `str`; got `int`",
    f"bad.yaml:30: $.providers.targets[4].provider: unknown provider 'azure'; "
    f"expected one of {KNOWN_PROVIDERS}",
    "bad.yaml:32: $.providers.targets[5]: missing required key 'id'",
    "bad.yaml:32: $.providers.targets[5]: missing required key 'model'",
    "bad.yaml:32: $.providers.targets[5]: missing required key 'base_url' (provider 'openai')",
    "bad.yaml:36: $.providers.targets[6].base_url: expected an http:// or https:// URL with a "
    "host; got 'https://'",
    "bad.yaml:37: $.providers.targets[6].max_connections: expected `int` <= 10000; got 70000",
    "bad.yaml:41: $.providers.targets[7].timeouts: expected a mapping; got a list",
    "bad.yaml:42: $.providers.targets[7].mock.mode: expected one of echo, fixed; got 'loud'",
    "bad.yaml:42: $.providers.targets[7].mock.chunk_chars: expected `int` >= 1; got 0",
    "bad.yaml:42: $.providers.targets[7].mock.chunk_delay_ms: expected `float` >= 0.0; got -5",
    "bad.yaml:46: $.providers.targets[8].model: duplicate key",
    "bad.yaml:48: $.policies.chain[3]: expected `str`; got `int`",
    "bad.yaml:48: $.policies.chain[1]: unknown policy 'no-such-policy'; "
    "expected one of audit-logger, pii-detector, prompt-injection",
    "bad.yaml:48: $.policies.chain[4]: policy 'pii-detector' appears twice in the chain",
    "bad.yaml:49: $.policies.order: unknown key; expected one of chain",
    "bad.yaml:51: $.policy.pii-detector: placeholder must not contain double quotes, "
    "backslashes or angle brackets",
    "bad.yaml:52: warning: $.policy.audit-logger: options for policy 'audit-logger', which is "
    "not in policies.chain",
    "bad.yaml:53: $.policy.spellcheck: unknown policy 'spellcheck'; "
    "expected one of audit-logger, pii-detector, prompt-injection",
    f"bad.yaml:54: $.extras: unknown key; expected one of {TOP_KEYS}",
]


def test_bad_everything_reports_every_problem_at_once() -> None:
    loaded, problems = check_file(BAD_EVERYTHING, env={})
    assert loaded is None
    assert [p.format("bad.yaml") for p in problems] == BAD_EVERYTHING_REPORT
    # Every problem points at a real line of the file (never at line 0 or past the end).
    n_lines = len(BAD_EVERYTHING.read_text(encoding="utf-8").splitlines())
    assert all(1 <= p.line <= n_lines for p in problems)


def test_bad_everything_at_start_raises_with_the_errors_only() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BAD_EVERYTHING, env={})
    expected = [
        line.replace("bad.yaml", str(BAD_EVERYTHING), 1)
        for line in BAD_EVERYTHING_REPORT
        if ": warning: " not in line
    ]
    assert str(info.value).splitlines() == expected
    assert len(info.value.problems) == len(expected)


# -- focused cases -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            MINIMAL + "providerz: {}\n",
            [f"c.yaml:4: $.providerz: unknown key; expected one of {TOP_KEYS}"],
            id="unknown-top-level-key",
        ),
        pytest.param(
            MINIMAL + "gateway:\n  hots: 127.0.0.1\n",
            [
                "c.yaml:5: $.gateway.hots: unknown key; expected one of host, port, "
                "max_body_bytes, header_timeout, body_timeout, log_level, log_format, "
                "drain_timeout, drain_grace, instance, "
                "max_concurrent_requests, max_concurrent_streams, overload_retry_after"
            ],
            id="unknown-nested-key",
        ),
        pytest.param(
            "providers:\n  targets:\n    - id: a\n      provider: mock\n      model: m\n"
            "      modle: n\n",
            [f"c.yaml:6: $.providers.targets[0].modle: unknown key; expected one of {TARGET_KEYS}"],
            id="unknown-key-in-target",
        ),
        pytest.param(
            MINIMAL + "  timeouts: {connect: fast}\n",
            ["c.yaml:4: $.providers.timeouts.connect: expected `float`; got `str`"],
            id="string-for-float",
        ),
        pytest.param(
            "providers:\n  targets:\n    - {id: 7, provider: mock, model: m}\n",
            ["c.yaml:3: $.providers.targets[0].id: expected `str`; got `int`"],
            id="int-for-string",
        ),
        pytest.param(
            MINIMAL + "gateway: [127.0.0.1, 8080]\n",
            ["c.yaml:4: $.gateway: expected a mapping; got a list"],
            id="list-for-mapping",
        ),
        pytest.param(
            "providers:\n  targets: {id: a, provider: mock, model: m}\n",
            ["c.yaml:2: $.providers.targets: expected a list; got a mapping"],
            id="mapping-for-list",
        ),
        pytest.param(
            MINIMAL + "policies: {chain: prompt-injection}\n",
            ["c.yaml:4: $.policies.chain: expected a list; got a string"],
            id="string-for-list",
        ),
        pytest.param(
            MINIMAL + "gateway: {port: 0}\n",
            ["c.yaml:4: $.gateway.port: expected `int` >= 1; got 0"],
            id="port-0",
        ),
        pytest.param(
            MINIMAL + "gateway: {port: 70000}\n",
            ["c.yaml:4: $.gateway.port: expected `int` <= 65535; got 70000"],
            id="port-70000",
        ),
        pytest.param(
            MINIMAL + "gateway: {port: '8080'}\n",
            ["c.yaml:4: $.gateway.port: expected `int`; got `str`"],
            id="port-as-string",
        ),
        pytest.param(
            MINIMAL + "gateway: {port: true}\n",
            ["c.yaml:4: $.gateway.port: expected `int`; got `bool`"],
            id="port-as-bool",
        ),
        pytest.param(
            MINIMAL + "gateway: {log_level: loud}\n",
            [
                "c.yaml:4: $.gateway.log_level: expected one of debug, info, warning, error; "
                "got 'loud'"
            ],
            id="log-level-loud",
        ),
        pytest.param(
            "providers:\n  targets:\n    - {id: a, provider: mock, model: m, client_key: maybe}\n",
            [
                "c.yaml:3: $.providers.targets[0].client_key: expected one of forward, ignore; "
                "got 'maybe'"
            ],
            id="client-key-maybe",
        ),
        pytest.param(
            "providers:\n  targets:\n    - {id: a, provider: mock, model: m, client_key: true}\n",
            [
                "c.yaml:3: $.providers.targets[0].client_key: expected one of forward, ignore; "
                "got true"
            ],
            id="client-key-bool",
        ),
        pytest.param(
            MINIMAL + "pack: {name: x, version: 1.0}\n",
            ["c.yaml:4: $.pack.version: expected `str`; got `float`"],
            id="version-as-float",
        ),
        pytest.param(
            MINIMAL + "pack: {name: '', version: '1'}\n",
            ["c.yaml:4: $.pack.name: expected `str` of length >= 1; got ''"],
            id="empty-string",
        ),
        pytest.param(
            MINIMAL + "gateway: null\n",
            ["c.yaml:4: $.gateway: expected a mapping; got null"],
            id="null-section",
        ),
        pytest.param(
            "providers:\n  targets: []\n",
            ["c.yaml:2: $.providers.targets: at least one target is required"],
            id="no-targets",
        ),
        pytest.param(
            "[providers]\n",
            ["c.yaml:1: $: expected a mapping; got a list"],
            id="top-level-list",
        ),
    ],
)
def test_type_and_range_problems(text: str, expected: list[str]) -> None:
    assert lint(text) == expected


def test_missing_providers() -> None:
    text = "pack: {name: x, version: '1'}\ngateway: {port: 8080}\n"
    assert lint(text) == ["c.yaml:1: $: missing required key 'providers'"]


def test_missing_target_keys() -> None:
    text = dedent(
        """
        providers:
          targets:
            - id: ok
              provider: mock
              model: m
            - base_url: https://api.openai.com
        """
    )
    assert lint(text) == [
        "c.yaml:6: $.providers.targets[1]: missing required key 'id'",
        "c.yaml:6: $.providers.targets[1]: missing required key 'provider'",
        "c.yaml:6: $.providers.targets[1]: missing required key 'model'",
    ]


@pytest.mark.parametrize("extra", ["", ", base_url: null"], ids=["absent", "null"])
def test_openai_target_needs_base_url(extra: str) -> None:
    text = f"providers:\n  targets:\n    - {{id: o, provider: openai, model: gpt-4o{extra}}}\n"
    assert lint(text) == [
        "c.yaml:3: $.providers.targets[0]: missing required key 'base_url' (provider 'openai')"
    ]


def test_mock_target_needs_no_base_url_and_no_key() -> None:
    loaded = load_ok(MINIMAL)
    (target,) = loaded.config.providers.targets
    assert target.base_url is None and target.secret_key_ref is None
    assert loaded.warnings == ()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.openai.com",
        "https://",
        "https:///v1",
        "api.openai.com",
        "https://api.openai.com:0",
        "https://api.openai.com:99999",
        "https://api.openai.com/v1?key=x",
        "https://api.openai.com/#frag",
        "https://api openai.com",
        "https://user:secret@api.openai.com",
    ],
)
def test_bad_base_url(url: str) -> None:
    text = dedent(
        f"""
        providers:
          targets:
            - id: o
              provider: openai
              model: gpt-4o
              base_url: '{url}'
        """
    )
    assert lint(text) == [
        f"c.yaml:6: $.providers.targets[0].base_url: expected an http:// or https:// URL "
        f"with a host; got '{url}'"
    ]


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://api.openai.com", "https://api.openai.com"),
        ("https://api.openai.com/v1", "https://api.openai.com"),
        ("https://api.openai.com/v1/", "https://api.openai.com"),
        ("https://api.openai.com/", "https://api.openai.com"),
        ("http://10.0.0.5:8080/proxy", "http://10.0.0.5:8080/proxy"),
        ("http://10.0.0.5:8080/proxy/v1", "http://10.0.0.5:8080/proxy"),
        ("http://10.0.0.5:8080/proxy/v1//", "http://10.0.0.5:8080/proxy"),
        ("http://localhost:11434", "http://localhost:11434"),
        ("http://[::1]:8000/v1", "http://[::1]:8000"),
        ("https://gw.example.com/apiv1", "https://gw.example.com/apiv1"),
    ],
)
def test_base_url_forms_are_accepted_and_never_double_v1(url: str, normalised: str) -> None:
    text = "providers:\n  targets:\n    - {id: o, provider: openai, model: m,\n"
    text += f"       base_url: '{url}'}}\n"
    loaded = load_ok(text)
    assert loaded.config.providers.targets[0].base_url == url  # stored as written
    assert normalise_base_url(url) == normalised
    chat_url = normalise_base_url(url) + "/v1/chat/completions"
    assert "/v1/v1" not in chat_url and chat_url.count("/v1/") == 1


def test_mock_options_on_a_non_mock_target() -> None:
    text = dedent(
        """
        providers:
          targets:
            - id: o
              provider: openai
              model: gpt-4o
              base_url: https://api.openai.com
              mock: {mode: echo}
        """
    )
    assert lint(text) == ["c.yaml:7: $.providers.targets[0].mock: only valid for provider 'mock'"]


def test_mock_null_on_a_non_mock_target_is_the_default() -> None:
    text = dedent(
        """
        providers:
          targets:
            - {id: o, provider: openai, model: gpt-4o, base_url: 'https://x.test', mock: null}
        """
    )
    assert load_ok(text).config.providers.targets[0].mock is None


def test_mock_options_are_validated() -> None:
    text = dedent(
        """
        providers:
          targets:
            - id: m
              provider: mock
              model: m
              mock:
                mode: fixed
                reply: 5
                latency_ms: -1
                chunk_delay_ms: -0.5
                speed: 3
        """
    )
    assert lint(text) == [
        "c.yaml:8: $.providers.targets[0].mock.reply: expected `str`; got `int`",
        "c.yaml:9: $.providers.targets[0].mock.latency_ms: expected `float` >= 0.0; got -1",
        "c.yaml:10: $.providers.targets[0].mock.chunk_delay_ms: expected `float` >= 0.0; got -0.5",
        "c.yaml:11: $.providers.targets[0].mock.speed: unknown key; expected one of mode, "
        "reply, chunk_chars, latency_ms, chunk_delay_ms",
    ]


def test_mock_chunk_delay_is_decoded() -> None:
    text = MINIMAL.replace("model: gpt-4o}", "model: gpt-4o, mock: {chunk_delay_ms: 150}}")
    (target,) = load_ok(text).config.providers.targets
    assert target.mock == MockOptions(chunk_delay_ms=150.0)


def test_unknown_provider_kind() -> None:
    text = "providers:\n  targets:\n    - {id: a, provider: azure, model: m}\n"
    assert lint(text) == [
        f"c.yaml:3: $.providers.targets[0].provider: unknown provider 'azure'; "
        f"expected one of {KNOWN_PROVIDERS}"
    ]


@pytest.mark.parametrize("kind", ["anthropic", "google-vertex", "ollama"])
def test_networked_provider_kinds_need_a_base_url(kind: str) -> None:
    text = f"providers:\n  targets:\n    - {{id: a, provider: {kind}, model: m}}\n"
    assert lint(text) == [
        f"c.yaml:3: $.providers.targets[0]: missing required key 'base_url' (provider '{kind}')"
    ]


def test_provider_sections_belong_to_their_provider() -> None:
    text = dedent(
        """
        providers:
          targets:
            - {id: a, provider: openai, model: m, base_url: "http://x", anthropic: {}}
            - {id: b, provider: google-vertex, model: m, base_url: "http://x",
               vertex: {api: vertex}}
            - {id: c, provider: ollama, model: m, base_url: "http://x", ollama: {api: native}}
        """
    )
    assert lint(text) == [
        "c.yaml:3: $.providers.targets[0].anthropic: only valid for provider 'anthropic'",
        "c.yaml:5: $.providers.targets[1].vertex: api 'vertex' needs a project",
    ]


def test_duplicate_target_ids_name_the_first_line() -> None:
    text = dedent(
        """
        providers:
          targets:
            - id: twin
              provider: mock
              model: a
            - id: other
              provider: mock
              model: b
            - id: twin
              provider: mock
              model: c
        """
    )
    assert lint(text) == [
        "c.yaml:9: $.providers.targets[2].id: duplicate target id 'twin' (first defined on line 3)"
    ]


def test_registry_names() -> None:
    assert policy_registry.POLICIES["pii-detector"].Options is PIIOptions
    assert not set(policy_registry.POLICIES) & policy_registry.PLANNED
    assert all(cls.name == name for name, cls in policy_registry.POLICIES.items())


@pytest.mark.parametrize("name", PLANNED_POLICIES)
def test_planned_policy_in_the_chain(name: str) -> None:
    assert lint(MINIMAL + f"policies:\n  chain: [{name}]\n") == [
        f"c.yaml:5: $.policies.chain[0]: policy '{name}' is not yet available in this release; "
        f"available: {AVAILABLE_POLICIES}"
    ]


@pytest.mark.parametrize("name", sorted(policy_registry.POLICIES))
def test_available_policy_in_the_chain(name: str) -> None:
    loaded = load_ok(MINIMAL + f"policies:\n  chain: [{name}]\n")
    assert loaded.config.policies.chain == [name]
    assert loaded.warnings == ()


def test_unknown_policy_in_the_chain() -> None:
    assert lint(MINIMAL + "policies:\n  chain:\n    - pii-detectr\n") == [
        f"c.yaml:6: $.policies.chain[0]: unknown policy 'pii-detectr'; "
        f"expected one of {KNOWN_POLICIES}"
    ]


def test_duplicate_policy_in_the_chain_is_reported_once() -> None:
    text = MINIMAL + "policies:\n  chain:\n    - nope\n    - nope\n"
    assert lint(text) == [
        f"c.yaml:6: $.policies.chain[0]: unknown policy 'nope'; expected one of {KNOWN_POLICIES}",
        "c.yaml:7: $.policies.chain[1]: policy 'nope' appears twice in the chain",
    ]


def test_planned_policy_options_are_accepted_when_in_the_chain(planned: str) -> None:
    text = MINIMAL + f"policies: {{chain: [{planned}]}}\npolicy: {{{planned}: {{anything: 1}}}}\n"
    # Only the chain entry is reported; the options of a planned policy are not checked.
    assert lint(text) == [
        f"c.yaml:4: $.policies.chain[0]: policy '{planned}' is not yet available in this "
        f"release; available: {AVAILABLE_POLICIES}"
    ]


def test_unknown_names_under_policy(planned: str) -> None:
    text = MINIMAL + dedent(
        f"""
        policy:
          pii-detectr: {{action: redact}}
          {planned}: {{retention_days: 30}}
        """
    )
    assert lint(text) == [
        f"c.yaml:5: $.policy.pii-detectr: unknown policy 'pii-detectr'; "
        f"expected one of {KNOWN_POLICIES}",
        f"c.yaml:6: $.policy.{planned}: policy '{planned}' is not yet available in this "
        f"release; available: {AVAILABLE_POLICIES}",
    ]


def test_unknown_policy_in_chain_and_options_is_reported_once() -> None:
    text = MINIMAL + "policies: {chain: [nope]}\npolicy: {nope: {}}\n"
    assert lint(text) == [
        f"c.yaml:4: $.policies.chain[0]: unknown policy 'nope'; expected one of {KNOWN_POLICIES}"
    ]


def test_non_string_chain_items_with_policy_options() -> None:
    text = MINIMAL + "policies: {chain: [{name: pii-detector}]}\npolicy: {}\n"
    assert lint(text) == ["c.yaml:4: $.policies.chain[0]: expected `str`; got `object`"]


def test_policy_options_must_be_a_mapping() -> None:
    assert lint(MINIMAL + "policy: [pii-detector]\n") == [
        "c.yaml:4: $.policy: expected a mapping; got a list"
    ]


# -- policies that are registered (a stand-in registered by the test) -----------------------


class _RedactorOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    action: Literal["redact", "mask", "block", "pseudonymize", "log"] = "redact"
    retention_days: int = 30


class _Redactor(Policy):
    name: ClassVar[str] = "kt-test-redactor"
    Options: ClassVar[type[msgspec.Struct]] = _RedactorOptions


@pytest.fixture
def redactor() -> Iterator[str]:
    policy_registry.register(_Redactor)
    try:
        yield _Redactor.name
    finally:
        policy_registry.unregister(_Redactor.name)


def test_registered_policy_options_are_decoded(redactor: str) -> None:
    text = MINIMAL + f"policies: {{chain: [{redactor}]}}\npolicy:\n  {redactor}: {{action: mask}}\n"
    loaded = load_ok(text)
    assert loaded.warnings == ()
    assert loaded.policy_options == {redactor: _RedactorOptions(action="mask")}


def test_registered_policy_options_are_checked_with_lines(redactor: str) -> None:
    text = MINIMAL + dedent(
        f"""
        policies: {{chain: [{redactor}]}}
        policy:
          {redactor}:
            action: redcat
            retention: 30
        """
    )
    assert lint(text) == [
        f"c.yaml:7: $.policy.{redactor}.action: expected one of redact, mask, block, "
        "pseudonymize, log; got 'redcat'",
        f"c.yaml:8: $.policy.{redactor}.retention: unknown key; expected one of action, "
        "retention_days",
    ]


def test_registered_policy_options_not_a_mapping_reported_once(redactor: str) -> None:
    text = MINIMAL + f"policies: {{chain: [{redactor}]}}\npolicy:\n  {redactor}: [mask]\n"
    assert lint(text) == [f"c.yaml:6: $.policy.{redactor}: expected a mapping; got a list"]


def test_null_policy_options_mean_the_defaults(redactor: str) -> None:
    loaded = load_ok(MINIMAL + f"policies: {{chain: [{redactor}]}}\npolicy:\n  {redactor}:\n")
    assert loaded.policy_options[redactor] == _RedactorOptions()


def test_options_for_a_policy_not_in_the_chain_warn(redactor: str) -> None:
    loaded = load_ok(MINIMAL + f"policy:\n  {redactor}: {{}}\n")
    assert [w.format("c.yaml") for w in loaded.warnings] == [
        f"c.yaml:5: warning: $.policy.{redactor}: options for policy '{redactor}', which is not "
        "in policies.chain"
    ]


def test_planned_message_lists_available_policies(redactor: str, planned: str) -> None:
    available = ", ".join(sorted([*policy_registry.POLICIES]))
    assert redactor in available.split(", ")
    assert lint(MINIMAL + f"policies: {{chain: [{planned}]}}\n") == [
        f"c.yaml:4: $.policies.chain[0]: policy '{planned}' is not yet available in this "
        f"release; available: {available}"
    ]


# -- pii-detector options ---------------------------------------------------------------------

# Its options start on line 7 (the policy's own key is on line 6).
PII = MINIMAL + "policies: {chain: [pii-detector]}\npolicy:\n  pii-detector:\n"
PII_PATH = "$.policy.pii-detector"
PII_KEYS = (
    "action, entities, direction, placeholder, max_hold, scope, conversation_header, "
    "conversation_ttl_s"
)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            "    action: redcat\n",
            f"c.yaml:7: {PII_PATH}.action: expected one of redact, mask, block, pseudonymize, "
            "log; got 'redcat'",
            id="unknown-action",
        ),
        pytest.param(
            "    entities: [EMAIL, PASSPORT]\n",
            f"c.yaml:7: {PII_PATH}.entities[1]: expected one of {ENTITY_NAMES}; got 'PASSPORT'",
            id="unknown-entity",
        ),
        pytest.param(
            "    entities:\n      - EMAIL\n      - email\n",
            f"c.yaml:9: {PII_PATH}.entities[1]: expected one of {ENTITY_NAMES}; got 'email'",
            id="entity-names-are-upper-case",
        ),
        pytest.param(
            "    entities: EMAIL\n",
            f"c.yaml:7: {PII_PATH}.entities: expected a list; got a string",
            id="entities-not-a-list",
        ),
        pytest.param(
            "    direction: up\n",
            f"c.yaml:7: {PII_PATH}.direction: expected one of request, response, both; got 'up'",
            id="unknown-direction",
        ),
        pytest.param(
            "    max_hold: 31\n",
            f"c.yaml:7: {PII_PATH}.max_hold: expected `int` >= 32; got 31",
            id="max-hold-below-32",
        ),
        pytest.param(
            "    max_hold: 65537\n",
            f"c.yaml:7: {PII_PATH}.max_hold: expected `int` <= 65536; got 65537",
            id="max-hold-above-65536",
        ),
        pytest.param(
            "    max_hold: '64'\n",
            f"c.yaml:7: {PII_PATH}.max_hold: expected `int`; got `str`",
            id="max-hold-as-string",
        ),
        pytest.param(
            "    placeholder: 5\n",
            f"c.yaml:7: {PII_PATH}.placeholder: expected `str`; got `int`",
            id="placeholder-not-a-string",
        ),
        pytest.param(
            "    colour: red\n",
            f"c.yaml:7: {PII_PATH}.colour: unknown key; expected one of {PII_KEYS}",
            id="unknown-key",
        ),
        pytest.param(
            "    placeholder: '[REDACTED]'\n",
            f"c.yaml:6: {PII_PATH}: placeholder must contain {{kind}}",
            id="placeholder-without-kind",
        ),
        pytest.param(
            "    placeholder: '[{KIND}]'\n",
            f"c.yaml:6: {PII_PATH}: placeholder must contain {{kind}}",
            id="placeholder-kind-is-lower-case",
        ),
        pytest.param(
            "    placeholder: '\"{kind}\"'\n",
            f"c.yaml:6: {PII_PATH}: placeholder must not contain double quotes, backslashes or "
            "angle brackets",
            id="placeholder-with-quotes",
        ),
        pytest.param(
            "    placeholder: '<{kind}>'\n",
            f"c.yaml:6: {PII_PATH}: placeholder must not contain double quotes, backslashes or "
            "angle brackets",
            id="placeholder-with-angle-brackets",
        ),
        pytest.param(
            "    placeholder: '[{kind}\\]'\n",
            f"c.yaml:6: {PII_PATH}: placeholder must not contain double quotes, backslashes or "
            "angle brackets",
            id="placeholder-with-backslash",
        ),
    ],
)
def test_pii_detector_options_problems(options: str, expected: str) -> None:
    assert lint(PII + options) == [expected]


def test_pii_detector_placeholder_rules_wait_for_valid_fields() -> None:
    # The rules of the options as a whole run only once every field is valid.
    text = PII + "    placeholder: '[REDACTED]'\n    max_hold: 8\n"
    assert lint(text) == [f"c.yaml:8: {PII_PATH}.max_hold: expected `int` >= 32; got 8"]


def test_pii_detector_every_field_problem_at_once() -> None:
    text = PII + "    {action: redcat, entities: [EMAIL, PASSPORT, 7], max_hold: 8, x: 1}\n"
    text = text.replace("pii-detector:\n    {", "pii-detector: {")
    assert lint(text) == [
        f"c.yaml:6: {PII_PATH}.x: unknown key; expected one of {PII_KEYS}",
        f"c.yaml:6: {PII_PATH}.action: expected one of redact, mask, block, pseudonymize, log; "
        "got 'redcat'",
        f"c.yaml:6: {PII_PATH}.entities[1]: expected one of {ENTITY_NAMES}; got 'PASSPORT'",
        f"c.yaml:6: {PII_PATH}.entities[2]: expected one of {ENTITY_NAMES}; got 7",
        f"c.yaml:6: {PII_PATH}.max_hold: expected `int` >= 32; got 8",
    ]


def test_pii_detector_options_are_decoded() -> None:
    text = PII + (
        "    action: pseudonymize\n"
        "    entities: [EMAIL, SECRETS]\n"
        "    direction: request\n"
        "    placeholder: '[{kind} removed]'\n"
        "    max_hold: 32\n"
    )
    loaded = load_ok(text)
    assert loaded.warnings == ()
    assert loaded.policy_options == {
        "pii-detector": PIIOptions(
            action="pseudonymize",
            entities=("EMAIL", "SECRETS"),
            direction="request",
            placeholder="[{kind} removed]",
            max_hold=32,
        )
    }


@pytest.mark.parametrize("options", ["", " {}", " null"], ids=["empty", "mapping", "null"])
def test_pii_detector_default_options(options: str) -> None:
    loaded = load_ok(PII.rstrip("\n") + options + "\n")
    assert loaded.policy_options == {"pii-detector": PIIOptions()}
    assert PIIOptions().placeholder == "[REDACTED:{kind}]"
    assert PIIOptions().max_hold == 256


def test_pii_detector_options_outside_the_chain_are_checked_and_warned() -> None:
    assert lint(MINIMAL + "policy:\n  pii-detector: {max_hold: 8}\n") == [
        f"c.yaml:5: {PII_PATH}.max_hold: expected `int` >= 32; got 8",
        f"c.yaml:5: warning: {PII_PATH}: options for policy 'pii-detector', which is not in "
        "policies.chain",
    ]
    loaded = load_ok(MINIMAL + "policy:\n  pii-detector: {action: mask}\n")
    assert [w.format("c.yaml") for w in loaded.warnings] == [
        f"c.yaml:5: warning: {PII_PATH}: options for policy 'pii-detector', which is not in "
        "policies.chain"
    ]
    assert loaded.policy_options == {"pii-detector": PIIOptions(action="mask")}


# -- YAML-level problems -------------------------------------------------------------------------


def test_duplicate_yaml_keys() -> None:
    text = dedent(
        """
        gateway: {port: 8080}
        providers:
          targets:
            - id: a
              provider: mock
              model: m
              provider: mock
        gateway: {port: 8081}
        """
    )
    assert lint(text) == [
        "c.yaml:7: $.providers.targets[0].provider: duplicate key",
        "c.yaml:8: $.gateway: duplicate key",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "providers:\n  targets:\n    - {id: a, provider: mock\n",
            "c.yaml:4: $: invalid YAML: expected ',' or '}', but got '<stream end>'",
            id="unclosed-flow-mapping",
        ),
        pytest.param(
            "providers:\n  targets:\n   - id: a\n  model: m\n bad\n",
            "c.yaml:5: $: invalid YAML: expected <block end>, but found '<scalar>'",
            id="bad-indentation",
        ),
        pytest.param(
            "providers:\n\t- a\n",
            "c.yaml:2: $: invalid YAML: found character '\\t' that cannot start any token",
            id="tab",
        ),
        pytest.param(
            "pack: {name: x}\n---\nproviders: {}\n",
            "c.yaml:2: $: invalid YAML: expected a single document in the stream, "
            "but found another document",
            id="two-documents",
        ),
        pytest.param(
            "providers: *nowhere\n",
            "c.yaml:1: $: invalid YAML: found undefined alias 'nowhere'",
            id="undefined-alias",
        ),
        pytest.param(
            "a: &x 1\nb: &x 2\n",
            "c.yaml:2: $: invalid YAML: found duplicate anchor 'x'; first occurrence on line 1, "
            "second occurrence",
            id="duplicate-anchor",
        ),
        pytest.param(
            "providers: &p {targets: [*p]}\n",
            "c.yaml:1: $: invalid YAML: an alias refers to a node that contains it",
            id="recursive-alias",
        ),
        pytest.param(
            "pack: !secret x\n",
            "c.yaml:1: $: invalid YAML: could not determine a constructor for the tag '!secret'",
            id="unknown-tag",
        ),
        pytest.param(
            "gateway: {port: !!int eighty}\n",
            "c.yaml:1: $: invalid YAML: cannot read 'eighty' as !!int",
            id="bad-explicit-int",
        ),
        pytest.param(
            "pack: {name: x, version: !!timestamp soon}\n",
            "c.yaml:1: $: invalid YAML: cannot read 'soon' as !!timestamp",
            id="bad-explicit-timestamp",
        ),
        pytest.param(
            "gateway:\n  <<: 5\n",
            "c.yaml:2: $: invalid YAML: expected a mapping or a list of mappings after '<<', "
            "but found scalar",
            id="bad-merge",
        ),
    ],
)
def test_invalid_yaml_is_one_problem_with_its_line(text: str, expected: str) -> None:
    assert lint(text) == [expected]


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    lines = lint(text)
    assert len(lines) == 1
    assert re.fullmatch(
        r"c\.yaml:\d+: \$: the file is empty; expected a mapping with at least 'providers'",
        lines[0],
    )


def test_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    loaded, problems = check_file(missing)
    assert loaded is None
    (problem,) = problems
    assert problem.severity == "error"
    assert problem.format(str(missing)) == (
        f"{missing}:0: $: cannot read the file: [Errno 2] No such file or directory: '{missing}'"
    )
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_config(missing)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + b"pack: {name: caf\xe9, version: '1'}\n")
    loaded, problems = check_file(path)
    assert loaded is None
    assert [p.message.split(":")[0] for p in problems] == ["cannot read the file"]


def test_merge_keys_share_target_settings() -> None:
    text = dedent(
        """
        providers:
          targets:
            - &base
              id: one
              provider: mock
              model: m1
              max_connections: 7
            - <<: *base
              id: two
              model: m2
            - {<<: *base, id: three, id: four}
        """
    )
    assert lint(text) == ["c.yaml:11: $.providers.targets[2].id: duplicate key"]
    text = text.replace(", id: four", ", model: m3")
    targets = load_ok(text).config.providers.targets
    assert [(t.id, t.model, t.max_connections) for t in targets] == [
        ("one", "m1", 7),
        ("two", "m2", 7),
        ("three", "m3", 7),
    ]


def test_problems_are_sorted_by_line() -> None:
    _, problems = check_file(BAD_EVERYTHING, env={})
    lines = [p.line for p in problems]
    assert lines == sorted(lines)


def test_problem_format() -> None:
    path = ("providers", "targets", 0, "secret_key_ref", "env")
    assert Problem("error", path, 3, "boom").format("f.yaml") == (
        "f.yaml:3: $.providers.targets[0].secret_key_ref.env: boom"
    )
    assert Problem("warning", (), 1, "hm").format("f.yaml") == "f.yaml:1: warning: $: hm"


# -- secret_key_ref: the environment variable ----------------------------------------------------

KEYED = dedent(
    """
    providers:
      targets:
        - id: o
          provider: openai
          model: gpt-4o
          base_url: https://api.openai.com
          secret_key_ref: {env: KT_TEST_KEY}
          client_key: CLIENT_KEY
    """
)
KEY_PATH = "$.providers.targets[0].secret_key_ref.env"


@pytest.mark.parametrize("for_start", [False, True], ids=["lint", "start"])
def test_missing_key_with_forwarding_is_a_warning(for_start: bool) -> None:
    text = KEYED.replace("CLIENT_KEY", "forward")
    assert lint(text, {}, for_start=for_start) == [
        f"c.yaml:7: warning: {KEY_PATH}: environment variable KT_TEST_KEY is not set; "
        "requests to this target need the client to send its own provider key"
    ]


def test_missing_key_with_ignore_is_a_warning_for_lint() -> None:
    text = KEYED.replace("CLIENT_KEY", "ignore")
    assert lint(text, {}) == [
        f"c.yaml:7: warning: {KEY_PATH}: environment variable KT_TEST_KEY is not set; "
        "requests to this target will fail"
    ]


def test_missing_key_with_ignore_is_an_error_at_start() -> None:
    text = KEYED.replace("CLIENT_KEY", "ignore")
    assert lint(text, {}, for_start=True) == [
        f"c.yaml:7: {KEY_PATH}: environment variable KT_TEST_KEY is not set and client_key is "
        "'ignore', so no request to this target could be authenticated"
    ]


def test_missing_key_and_load_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(KEYED.replace("CLIENT_KEY", "ignore"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [p.path for p in info.value.problems] == [
        ("providers", "targets", 0, "secret_key_ref", "env")
    ]
    assert load_config(path, env={"KT_TEST_KEY": "sk-x"}).warnings == ()

    path.write_text(KEYED.replace("CLIENT_KEY", "forward"), encoding="utf-8")
    loaded = load_config(path, env={})
    assert [w.severity for w in loaded.warnings] == ["warning"]
    assert loaded.filename == str(path)


@pytest.mark.parametrize("mode", ["forward", "ignore"])
@pytest.mark.parametrize("for_start", [False, True], ids=["lint", "start"])
def test_present_key_is_no_problem(mode: str, for_start: bool) -> None:
    text = KEYED.replace("CLIENT_KEY", mode)
    assert lint(text, {"KT_TEST_KEY": "sk-x"}, for_start=for_start) == []


def test_empty_key_counts_as_not_set() -> None:
    text = KEYED.replace("CLIENT_KEY", "ignore")
    assert len(lint(text, {"KT_TEST_KEY": ""}, for_start=True)) == 1


def test_check_text_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    text = KEYED.replace("CLIENT_KEY", "ignore")
    monkeypatch.setenv("KT_TEST_KEY", "sk-x")
    assert check_text(text, for_start=True)[1] == []
    monkeypatch.delenv("KT_TEST_KEY")
    assert check_text(text, for_start=True)[0] is None


# -- defaults -----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = load_ok(MINIMAL).config
    assert config.gateway == Gateway()
    assert config.gateway.host == "127.0.0.1"
    assert config.gateway.port == 41002
    assert config.gateway.log_level == "info"
    assert config.gateway.max_body_bytes == 4 * 1024 * 1024
    assert config.gateway.drain_timeout == 30.0
    assert config.pack is None
    assert config.policies.chain == []
    assert config.policy == {}
    assert config.providers.timeouts == Timeouts(
        connect=10.0, first_byte=60.0, idle=60.0, total=600.0
    )
    (target,) = config.providers.targets
    assert target.client_key == "forward"
    assert target.max_connections == 100
    assert target.timeouts is None
    assert target.mock is None
    assert MockOptions() == MockOptions(
        mode="echo",
        reply="Hello from the ktproxy mock provider.",
        chunk_chars=4,
        latency_ms=0.0,
        chunk_delay_ms=0.0,
    )
    assert Pack(name="x", version="1").enabled is True


def test_target_timeouts_prefers_the_targets_own() -> None:
    text = dedent(
        """
        providers:
          timeouts: {connect: 2, total: null}
          targets:
            - {id: shared, provider: mock, model: a}
            - {id: own, provider: mock, model: b, timeouts: {first_byte: 5.5}}
        """
    )
    config = load_ok(text).config
    shared, own = config.providers.targets
    assert target_timeouts(config, shared) == Timeouts(connect=2.0, total=None)
    assert target_timeouts(config, shared) is config.providers.timeouts
    # A target's own block replaces the providers' default as a whole (unset fields
    # take the built-in defaults, not the providers' ones).
    assert target_timeouts(config, own) == Timeouts(first_byte=5.5)
    assert isinstance(target_timeouts(config, own).connect, float)


def test_the_example_config_loads() -> None:
    loaded, problems = check_file(EXAMPLE, env={"OPENAI_API_KEY": "sk-x"})
    assert problems == []
    assert loaded is not None
    config = loaded.config
    assert [(t.id, t.provider, t.model) for t in config.providers.targets] == [
        ("mock-echo", "mock", "gpt-4o"),
        ("openai-primary", "openai", "gpt-4o-mini"),
    ]
    assert (config.gateway.host, config.gateway.port) == ("127.0.0.1", 41002)


# -- round trips -------------------------------------------------------------------------------


def round_trip(config: Config) -> Config:
    # (no allow_unicode: pyyaml then emits some line-break characters, e.g. U+0085, raw
    # inside quoted strings and cannot read them back)
    text = yaml.safe_dump(to_builtins(config), sort_keys=False)
    loaded, problems = check_text(text, env={})
    assert loaded is not None, [p.format("rt.yaml") for p in problems]
    assert all(p.severity == "warning" for p in problems)
    return loaded.config


@pytest.mark.parametrize("path", [EXAMPLE, CONFIGS / "seed.yaml"], ids=["example", "seed"])
def test_round_trip_of_files(path: Path) -> None:
    data, _ = load_yaml(path.read_text(encoding="utf-8"))
    config = msgspec.convert(data, Config)
    # Keep only the policies of this release (the seed also names planned ones).
    available = policy_registry.POLICIES
    config = msgspec.structs.replace(
        config,
        policies=msgspec.structs.replace(
            config.policies, chain=[n for n in config.policies.chain if n in available]
        ),
        policy={n: o for n, o in config.policy.items() if n in available},
    )
    assert msgspec.to_builtins(config) == to_builtins(config)
    assert round_trip(config) == config


_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
)
_seconds = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)
_timeouts = st.builds(
    Timeouts,
    connect=_seconds,
    first_byte=_seconds,
    idle=_seconds,
    total=st.none() | _seconds | st.just(float("inf")),
)
_base_url = st.sampled_from(
    [
        "https://api.openai.com",
        "https://api.openai.com/v1",
        "https://api.openai.com/v1/",
        "http://10.0.0.5:8080/proxy",
        "http://[::1]:8000",
    ]
)


@st.composite
def _targets(draw: st.DrawFn) -> list[Target]:
    ids = draw(st.lists(_text, min_size=1, max_size=4, unique=True))
    targets = []
    for tid in ids:
        common: dict[str, Any] = {
            "id": tid,
            "model": draw(_text),
            "timeouts": draw(st.none() | _timeouts),
            "max_connections": draw(st.integers(1, 10000)),
            "client_key": draw(st.sampled_from(["forward", "ignore"])),
        }
        if draw(st.booleans()):
            mock = draw(
                st.none()
                | st.builds(
                    MockOptions,
                    mode=st.sampled_from(["echo", "fixed"]),
                    reply=st.text(max_size=30),
                    chunk_chars=st.integers(1, 64),
                    latency_ms=st.floats(0, 1e4),
                    chunk_delay_ms=st.floats(0, 1e4),
                )
            )
            targets.append(Target(provider="mock", mock=mock, **common))
        else:
            env_name = st.from_regex(r"[A-Z_]{1,12}", fullmatch=True)
            ref = draw(st.none() | st.builds(SecretRef, env=env_name))
            targets.append(
                Target(provider="openai", base_url=draw(_base_url), secret_key_ref=ref, **common)
            )
    return targets


_configs = st.builds(
    Config,
    providers=st.builds(Providers, targets=_targets(), timeouts=_timeouts),
    pack=st.none() | st.builds(Pack, name=_text, version=_text, enabled=st.booleans()),
    gateway=st.builds(
        Gateway,
        host=st.sampled_from(["127.0.0.1", "::1", "localhost"]),
        port=st.integers(1, 65535),
        max_body_bytes=st.integers(1024, 2**40),
        log_level=st.sampled_from(["debug", "info", "warning", "error"]),
        drain_timeout=st.floats(0, 3600),
    ),
)


@settings(max_examples=50, deadline=None)
@given(_configs)
def test_round_trip_property(config: Config) -> None:
    assert round_trip(config) == config


PG_LINT = """
providers:
  targets:
    - {id: echo, provider: mock, model: gpt-4o}
policies:
  chain: [audit-logger]
policy:
  audit-logger: {sink: postgres, postgres: {dsn_ref: {env: KT_LINT_DSN}}}
"""


@pytest.mark.parametrize(("for_start", "prefix"), [(True, ""), (False, "warning: ")])
def test_lint_names_an_unset_dsn_variable(for_start: bool, prefix: str) -> None:
    """No server needed: lint only reads the environment."""
    _, problems = check_text(PG_LINT, env={}, for_start=for_start)
    messages = [p.format("c.yaml") for p in problems]
    expected = (
        f"{prefix}$.policy.audit-logger.postgres.dsn_ref.env: environment variable "
        "KT_LINT_DSN is not set; the audit-logger cannot reach PostgreSQL"
    )
    assert any(expected in m for m in messages), messages
    _, problems = check_text(PG_LINT, env={"KT_LINT_DSN": "postgresql://x@h/db"})
    assert not any("KT_LINT_DSN" in p.format("c.yaml") for p in problems)


CONVERSATION = (
    MINIMAL
    + "policies: {chain: [pii-detector]}\n"
    + "state:\n  backend: redis\n  redis: {url: {env: RURL}}\n"
    + "policy:\n  pii-detector: {action: pseudonymize, scope: conversation}\n"
)


def test_conversation_pseudonyms_in_redis_need_an_encryption_key() -> None:
    env = {"RURL": "redis://127.0.0.1:6379/15"}
    assert lint(CONVERSATION, env) == [
        "c.yaml:7: $.state.redis: pii-detector keeps pseudonyms per conversation (scope: "
        "conversation), so state.redis needs encryption_key_ref: {env: ...} to encrypt "
        "them at rest"
    ]
    text = CONVERSATION.replace(
        "{url: {env: RURL}}", "{url: {env: RURL}, encryption_key_ref: {env: K}}"
    )
    assert lint(text, {**env, "K": "short"}) == [
        "c.yaml:7: $.state.redis.encryption_key_ref.env: environment variable K must hold "
        "at least 16 characters"
    ]
    assert lint(text, {**env, "K": "x" * 16}) == []


def test_scope_conversation_needs_pseudonymize() -> None:
    text = PII + "    scope: conversation\n"
    assert lint(text) == [
        "c.yaml:6: $.policy.pii-detector: scope: conversation applies to action: pseudonymize only"
    ]
