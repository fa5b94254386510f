"""Loading and linting the policy config: every problem at once, with file and line.

msgspec stops at the first error of a value, but a user fixing a config wants the
whole list. So the raw YAML data is walked against the Struct types here, field by
field: each scalar is checked with `msgspec.convert` (keeping msgspec's wording),
unknown and missing keys are reported per mapping, and rules that need a registry
or several fields (known providers and policies, duplicate ids, environment
variables) run beside the walk. Only a file with no errors is decoded into `Config`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Literal, Union, get_args, get_origin

import msgspec

from ktproxy.config import (
    Config,
    ConsumerGroup,
    Consumers,
    Gateway,
    KeyRef,
    Policies,
    Providers,
    Routing,
    State,
    Target,
)
from ktproxy.policies import registry as policy_registry
from ktproxy.providers import registry as provider_registry
from ktproxy.yamlsource import Path, SourceMap, YamlSyntaxError, format_path, load_yaml

Severity = Literal["error", "warning"]

# Above this many concurrent requests per worker, a limit no longer protects anything.
_MAX_SENSIBLE_CONCURRENCY = 16384


def tls_ca_problem(ca_file: str) -> str | None:
    """Why `ca_file` cannot serve as a target's CA bundle, or None if it loads."""
    if not os.path.isfile(ca_file):
        return f"no such file: {ca_file!r}"
    try:
        ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return f"not a PEM CA bundle ({reason}): {ca_file!r}"
    return None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in a config file."""

    severity: Severity
    path: Path
    line: int
    message: str

    def format(self, filename: str) -> str:
        """`file:line: $.path: message` (warnings say so after the line)."""
        kind = "warning: " if self.severity == "warning" else ""
        return f"{filename}:{self.line}: {kind}{format_path(self.path)}: {self.message}"


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A config that passed the check, with per-policy options decoded."""

    config: Config
    policy_options: Mapping[str, msgspec.Struct]
    filename: str
    warnings: tuple[Problem, ...] = ()
    # Per consumer group: its policies' options, the global ones with its overrides.
    group_options: Mapping[str, Mapping[str, msgspec.Struct]] = field(default_factory=dict)
    # The YAML text this was decoded from and when (epoch seconds): the admin API shows
    # them, and re-checks the text, without reading a file that may have changed since.
    text: str = field(default="", repr=False, compare=False)
    loaded_at: float = field(default_factory=time.time, compare=False)


class ConfigError(Exception):
    """The config has errors; `str()` is the full report, one problem per line."""

    def __init__(self, filename: str, problems: list[Problem]) -> None:
        self.filename = filename
        self.problems = problems
        super().__init__("\n".join(p.format(filename) for p in problems))


@dataclass
class _Checker:
    smap: SourceMap
    env: Mapping[str, str]
    for_start: bool
    problems: list[Problem] = field(default_factory=list)
    root: Any = None  # the whole file's data, for rules that look across sections

    def add(self, path: Path, message: str, severity: Severity = "error") -> None:
        self.problems.append(Problem(severity, path, self.smap.line_of(path), message))

    # -- the type walk -------------------------------------------------------------

    def walk(self, value: Any, tp: Any, path: Path) -> None:
        origin = get_origin(tp)
        if tp is Any:
            return
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
                expected = ", ".join(str(a) for a in allowed)
                self.add(path, f"expected one of {expected}; got {_show(value)}")
            return
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if value is None and len(members) < len(get_args(tp)):
                return
            if len(members) == 1:
                self.walk(value, members[0], path)
                return
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            self.walk_struct(value, tp, path)
            return
        if origin is list or (origin is tuple and get_args(tp)[1:] == (...,)):
            if not isinstance(value, list):
                self.add(path, f"expected a list; got {_kind(value)}")
                return
            item_tp = get_args(tp)[0]
            for i, item in enumerate(value):
                self.walk(item, item_tp, path + (i,))
            return
        if origin is dict:
            if not isinstance(value, dict):
                self.add(path, f"expected a mapping; got {_kind(value)}")
                return
            _, value_tp = get_args(tp)
            for key, item in value.items():
                self.walk(item, value_tp, path + (str(key),))
            return
        try:
            msgspec.convert(value, tp, strict=True)
        except msgspec.ValidationError as exc:
            self.add(path, _msgspec_message(str(exc), value))

    def walk_struct(self, value: Any, tp: type[msgspec.Struct], path: Path) -> None:
        if not isinstance(value, dict):
            self.add(path, f"expected a mapping; got {_kind(value)}")
            return
        fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
        before = self._errors()
        for key in value:
            if key not in fields:
                expected = ", ".join(fields)
                self.add(path + (str(key),), f"unknown key; expected one of {expected}")
        for name, info in fields.items():
            if name in value:
                self.walk(value[name], info.type, path + (name,))
            elif info.required:
                self.add(path, f"missing required key '{name}'")
        if self._errors() == before and hasattr(tp, "__post_init__"):
            # Cross-field rules of the Struct itself (`__post_init__`).
            try:
                msgspec.convert(value, tp, strict=True)
            except msgspec.ValidationError as exc:
                self.add(path, _msgspec_message(str(exc), None, show_value=False))
        rule = _RULES.get(tp)
        if rule is not None:
            rule(self, value, path)

    def _errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    # -- rules beyond types ----------------------------------------------------------

    def check_providers(self, value: dict[str, Any], path: Path) -> None:
        targets = value.get("targets")
        if not isinstance(targets, list):
            return
        if not targets:
            self.add(path + ("targets",), "at least one target is required")
        seen: dict[str, int] = {}
        for i, target in enumerate(targets):
            tid = target.get("id") if isinstance(target, dict) else None
            if not isinstance(tid, str):
                continue
            if tid in seen:
                first = self.smap.line_of(path + ("targets", seen[tid], "id"))
                self.add(
                    path + ("targets", i, "id"),
                    f"duplicate target id '{tid}' (first defined on line {first})",
                )
            else:
                seen[tid] = i

    def check_target(self, value: dict[str, Any], path: Path) -> None:
        kind = value.get("provider")
        if isinstance(kind, str):
            if kind in provider_registry.PLANNED:
                self.add(
                    path + ("provider",),
                    f"provider '{kind}' is not yet available in this release; "
                    f"available: {', '.join(sorted(provider_registry.PROVIDERS))}",
                )
            elif kind not in provider_registry.PROVIDERS:
                known = sorted(provider_registry.PROVIDERS) + sorted(provider_registry.PLANNED)
                self.add(
                    path + ("provider",),
                    f"unknown provider '{kind}'; expected one of {', '.join(known)}",
                )
            elif kind in provider_registry.NETWORKED and value.get("base_url") is None:
                self.add(path, f"missing required key 'base_url' (provider '{kind}')")
            for section, owner in _PROVIDER_SECTIONS.items():
                if value.get(section) is not None and kind != owner:  # null is the default
                    self.add(path + (section,), f"only valid for provider '{owner}'")
            vertex = value.get("vertex")
            if kind == "google-vertex" and isinstance(vertex, dict):
                if vertex.get("api") == "vertex" and not vertex.get("project"):
                    self.add(path + ("vertex",), "api 'vertex' needs a project")
        url = value.get("base_url")
        if isinstance(url, str) and not _valid_url(url):
            self.add(
                path + ("base_url",),
                f"expected an http:// or https:// URL with a host; got {_show(url)}",
            )
        tls = value.get("tls")
        if isinstance(tls, dict):
            self._check_tls(tls, url, path + ("tls",))
        ref = value.get("secret_key_ref")
        env = ref.get("env") if isinstance(ref, dict) else None
        if isinstance(env, str) and env and not self.env.get(env):
            locked = value.get("client_key") == "ignore"
            if self.for_start and locked:
                self.add(
                    path + ("secret_key_ref", "env"),
                    f"environment variable {env} is not set and client_key is 'ignore', "
                    "so no request to this target could be authenticated",
                )
            else:
                self.add(
                    path + ("secret_key_ref", "env"),
                    f"environment variable {env} is not set; requests to this target "
                    + ("will fail" if locked else "need the client to send its own provider key"),
                    "warning",
                )

    def _check_tls(self, tls: dict[str, Any], url: object, path: Path) -> None:
        """`tls:` of a target: a CA file that loads, and a warning for `verify: false`."""
        if isinstance(url, str) and not url.lower().startswith("https://"):
            self.add(path, "only used with an https:// base_url", "warning")
        ca_file = tls.get("ca_file")
        if isinstance(ca_file, str):
            problem = tls_ca_problem(ca_file)
            if problem:
                self.add(path + ("ca_file",), problem)
        if tls.get("verify") is False:
            self.add(
                path + ("verify",),
                "certificate verification is off: anyone on the path can read this "
                "target's traffic and its API key",
                "warning",
            )

    def check_policies(self, value: dict[str, Any], path: Path) -> None:
        chain = value.get("chain")
        if isinstance(chain, list):
            self._check_chain(chain, path + ("chain",))

    def _check_policy_name(self, name: str, path: Path) -> bool:
        if name in policy_registry.POLICIES:
            return True
        if name in policy_registry.PLANNED:
            self.add(path, f"policy '{name}' is not yet available in this release{_avail()}")
        else:
            known = sorted(policy_registry.POLICIES) + sorted(policy_registry.PLANNED)
            self.add(path, f"unknown policy '{name}'; expected one of {', '.join(known)}")
        return False

    def check_consumers(self, value: dict[str, Any], path: Path) -> None:
        groups = value.get("groups")
        if not isinstance(groups, list):
            return
        seen: dict[str, int] = {}
        keys: dict[tuple[str, str], tuple[int, int]] = {}
        for i, group in enumerate(groups):
            if not isinstance(group, dict):
                continue
            gid = group.get("id")
            if isinstance(gid, str):
                if gid in seen:
                    first = self.smap.line_of(path + ("groups", seen[gid], "id"))
                    self.add(
                        path + ("groups", i, "id"),
                        f"duplicate group id '{gid}' (first defined on line {first})",
                    )
                else:
                    seen[gid] = i
            for k, key in enumerate(group.get("keys") or []):
                if not isinstance(key, dict):
                    continue
                for kind in ("env", "sha256"):
                    ident = key.get(kind)
                    if not isinstance(ident, str):
                        continue
                    if (kind, ident) in keys:
                        gi, _ = keys[kind, ident]
                        self.add(
                            path + ("groups", i, "keys", k),
                            f"this key is already a key of group #{gi + 1}; a key names "
                            "exactly one group",
                        )
                    else:
                        keys[kind, ident] = (i, k)

    def check_key(self, value: dict[str, Any], path: Path) -> None:
        env = value.get("env")
        if isinstance(env, str) and env and not self.env.get(env):
            self.add(
                path + ("env",),
                f"environment variable {env} is not set; this key will not be accepted",
                "warning",
            )

    def check_group(self, value: dict[str, Any], path: Path) -> None:
        chain = value.get("chain")
        if isinstance(chain, list):
            self._check_chain(chain, path + ("chain",))
        models = value.get("models")
        if isinstance(models, list):
            routable = self._routable()
            for i, model in enumerate(models):
                if isinstance(model, str) and not routable(model):
                    self.add(
                        path + ("models", i),
                        f"model '{model}' is not routed by any target (a target's model or "
                        "id, or <provider>:chat:<model> for a configured provider)",
                    )
        overrides = value.get("policy")
        if not isinstance(overrides, dict):
            return
        root = self.root if isinstance(self.root, dict) else {}
        global_opts = root.get("policy") if isinstance(root.get("policy"), dict) else {}
        for name, opts in overrides.items():
            opath = path + ("policy", str(name))
            if not self._check_policy_name(str(name), opath):
                continue
            if opts is not None and not isinstance(opts, dict):
                self.add(opath, f"expected a mapping; got {_kind(opts)}")
                continue
            base = global_opts.get(name) if isinstance(global_opts, dict) else None
            merged = {**(base if isinstance(base, dict) else {}), **(opts or {})}
            self.walk(merged, policy_registry.POLICIES[str(name)].Options, opath)

    def _routable(self) -> Callable[[str], bool]:
        """Does a model name resolve to a target (the router's rules, on raw data)?"""
        root = self.root if isinstance(self.root, dict) else {}
        providers = root.get("providers")
        targets = providers.get("targets") if isinstance(providers, dict) else None
        names: set[str] = set()
        kinds: set[str] = set()
        for t in targets if isinstance(targets, list) else []:
            if isinstance(t, dict):
                names |= {v for k in ("id", "model") if isinstance(v := t.get(k), str)}
                if isinstance(t.get("provider"), str):
                    kinds.add(t["provider"])

        routing = root.get("routing")
        routes = routing.get("models") if isinstance(routing, dict) else None
        for route in routes if isinstance(routes, list) else []:
            if isinstance(route, dict) and isinstance(route.get("name"), str):
                names.add(route["name"])

        def routable(model: str) -> bool:
            kind, sep, rest = model.partition(":chat:")
            return model in names or bool(sep and rest and kind in kinds)

        return routable

    def _check_chain(self, chain: list[Any], path: Path) -> None:
        seen: set[str] = set()
        for i, name in enumerate(chain):
            if not isinstance(name, str):
                continue
            if name in seen:
                self.add(path + (i,), f"policy '{name}' appears twice in the chain")
                continue
            seen.add(name)
            self._check_policy_name(name, path + (i,))

    def _audit_logger_options(
        self, root: dict[str, Any]
    ) -> Iterator[tuple[list[Any], dict[str, Any], Path]]:
        """Each chain that holds `audit-logger`, with its merged options and its path."""
        policies = root.get("policies")
        global_chain = policies.get("chain") if isinstance(policies, dict) else None
        global_opts = root.get("policy") if isinstance(root.get("policy"), dict) else {}
        consumers = root.get("consumers")
        groups = consumers.get("groups") if isinstance(consumers, dict) else None
        checks: list[tuple[Any, Any, Path]] = [(global_chain, None, ("policies", "chain"))]
        for i, group in enumerate(groups if isinstance(groups, list) else []):
            if isinstance(group, dict):
                chain = group.get("chain", global_chain)
                at: Path = ("consumers", "groups", i, "chain" if "chain" in group else "policy")
                checks.append((chain, group.get("policy"), at))
        for chain, overrides, where in checks:
            if not isinstance(chain, list) or "audit-logger" not in chain:
                continue
            opts: dict[str, Any] = {}
            for source in (global_opts, overrides):
                if isinstance(source, dict) and isinstance(source.get("audit-logger"), dict):
                    opts.update(source["audit-logger"])
            yield chain, opts, where

    def _check_content_order(self, root: dict[str, Any]) -> None:
        """`audit-logger` storing content must see it after `pii-detector` redacted it."""
        for chain, opts, where in self._audit_logger_options(root):
            if opts.get("store_content") != "redacted":
                continue
            position = chain.index("audit-logger")
            if "pii-detector" not in chain[:position]:
                self.add(
                    where,
                    "audit-logger stores content (store_content: redacted), so pii-detector "
                    "must come before it in the chain",
                )

    def _check_audit_dsn(self, root: dict[str, Any]) -> None:
        """`sink: postgres` needs its DSN's environment variable (once per variable)."""
        reported: set[str] = set()
        for _chain, opts, _where in self._audit_logger_options(root):
            postgres = opts.get("postgres")
            if opts.get("sink") != "postgres" or not isinstance(postgres, dict):
                continue
            ref = postgres.get("dsn_ref")
            env = ref.get("env") if isinstance(ref, dict) else None
            if not isinstance(env, str) or not env or env in reported or self.env.get(env):
                continue
            reported.add(env)
            self.add(
                ("policy", "audit-logger", "postgres", "dsn_ref", "env"),
                f"environment variable {env} is not set; the audit-logger cannot reach PostgreSQL",
                "error" if self.for_start else "warning",
            )

    def check_gateway(self, value: dict[str, Any], path: Path) -> None:
        def number(key: str) -> int | None:
            v = value.get(key, getattr(Gateway(), key))
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
            return v if ok else None  # a bad value was reported by the type walk

        requests = number("max_concurrent_requests")
        streams = number("max_concurrent_streams")
        explicit = "max_concurrent_streams" in value  # the default is not the user's doing
        if explicit and requests is not None and streams is not None and streams > requests:
            self.add(
                path + ("max_concurrent_streams",),
                f"{streams} can never be reached: every stream is also one of the "
                f"max_concurrent_requests ({requests})",
                "warning",
            )
        if requests is not None and requests > _MAX_SENSIBLE_CONCURRENCY:
            self.add(
                path + ("max_concurrent_requests",),
                f"{requests} per worker: each request holds a client and an upstream "
                "socket, so the open-file limit or memory runs out before this limit "
                "protects the worker; use more workers or a smaller limit",
                "warning",
            )

    def check_state(self, value: dict[str, Any], path: Path) -> None:
        redis = value.get("redis")
        if not isinstance(redis, dict):
            return
        if value.get("backend", "memory") != "redis":
            self.add(path + ("redis",), "unused: backend is not redis", "warning")
            return
        ref = redis.get("url")
        env = ref.get("env") if isinstance(ref, dict) else None
        if not isinstance(env, str) or not env:
            return  # reported by the type walk
        url = self.env.get(env)
        if not url:
            self.add(
                path + ("redis", "url", "env"),
                f"environment variable {env} is not set; the gateway cannot reach Redis "
                "for its rate limits and budgets",
                "error" if self.for_start else "warning",
            )
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            # The value may hold a password: it is never shown.
            self.add(
                path + ("redis", "url", "env"),
                f"environment variable {env} does not hold a redis://, rediss:// or unix:// URL",
            )
        self._check_vault_key(redis, path + ("redis",))

    def _check_vault_key(self, redis: dict[str, Any], path: Path) -> None:
        """Conversation pseudonyms in Redis are encrypted: the secret must be there."""
        if not self._conversation_pseudonyms():
            return
        ref = redis.get("encryption_key_ref")
        if ref is None:
            self.add(
                path,
                "pii-detector keeps pseudonyms per conversation (scope: conversation), so "
                "state.redis needs encryption_key_ref: {env: ...} to encrypt them at rest",
            )
            return
        env = ref.get("env") if isinstance(ref, dict) else None
        if not isinstance(env, str) or not env:
            return  # reported by the type walk
        secret = self.env.get(env)
        if not secret:
            self.add(
                path + ("encryption_key_ref", "env"),
                f"environment variable {env} is not set; conversation pseudonyms cannot be "
                "encrypted",
                "error" if self.for_start else "warning",
            )
        elif len(secret) < 16:
            self.add(
                path + ("encryption_key_ref", "env"),
                f"environment variable {env} must hold at least 16 characters",
            )

    def _conversation_pseudonyms(self) -> bool:
        """Whether any pii-detector options (global or a group's) say scope: conversation."""
        root = self.root if isinstance(self.root, dict) else {}
        sources = [root.get("policy")]
        consumers = root.get("consumers")
        groups = consumers.get("groups") if isinstance(consumers, dict) else None
        for group in groups if isinstance(groups, list) else []:
            if isinstance(group, dict):
                sources.append(group.get("policy"))
        for source in sources:
            opts = source.get("pii-detector") if isinstance(source, dict) else None
            if isinstance(opts, dict) and opts.get("scope") == "conversation":
                return True
        return False

    def check_routing(self, value: dict[str, Any], path: Path) -> None:
        models = value.get("models")
        if not isinstance(models, list):
            return
        root = self.root if isinstance(self.root, dict) else {}
        providers = root.get("providers")
        targets = providers.get("targets") if isinstance(providers, dict) else None
        ids = (
            {t.get("id") for t in targets if isinstance(t, dict)}
            if isinstance(targets, list)
            else set()
        )
        seen: dict[str, int] = {}
        for i, route in enumerate(models):
            if not isinstance(route, dict):
                continue
            name = route.get("name")
            if isinstance(name, str):
                if name in seen:
                    first = self.smap.line_of(path + ("models", seen[name], "name"))
                    self.add(
                        path + ("models", i, "name"),
                        f"duplicate model route '{name}' (first defined on line {first})",
                    )
                else:
                    seen[name] = i
            for j, tid in enumerate(route.get("targets") or []):
                if isinstance(tid, str) and tid not in ids:
                    self.add(path + ("models", i, "targets", j), f"no target with id '{tid}'")

    def check_root(self, value: dict[str, Any], path: Path) -> None:
        self._check_content_order(value)
        self._check_audit_dsn(value)
        options = value.get("policy")
        if not isinstance(options, dict):
            return
        chain = (
            value.get("policies", {}).get("chain", [])
            if isinstance(value.get("policies"), dict)
            else []
        )
        in_chain = {n for n in chain if isinstance(n, str)} if isinstance(chain, list) else set()
        for name, opts in options.items():
            opath = path + ("policy", str(name))
            if name in policy_registry.POLICIES:
                if isinstance(opts, dict):  # anything else was reported by the type walk
                    self.walk(opts, policy_registry.POLICIES[name].Options, opath)
                if name not in in_chain:
                    self.add(
                        opath,
                        f"options for policy '{name}', which is not in policies.chain",
                        "warning",
                    )
            elif name not in in_chain:  # names in the chain were reported there
                self._check_policy_name(str(name), opath)


_RULES: dict[type, Callable[[_Checker, dict[str, Any], Path], None]] = {
    Config: _Checker.check_root,
    Providers: _Checker.check_providers,
    Target: _Checker.check_target,
    Policies: _Checker.check_policies,
    Consumers: _Checker.check_consumers,
    ConsumerGroup: _Checker.check_group,
    Routing: _Checker.check_routing,
    Gateway: _Checker.check_gateway,
    State: _Checker.check_state,
    KeyRef: _Checker.check_key,
}

# Provider-specific sections of a target and the provider each belongs to.
_PROVIDER_SECTIONS = {
    "mock": "mock",
    "anthropic": "anthropic",
    "vertex": "google-vertex",
    "ollama": "ollama",
}

_URL = re.compile(
    r"^https?://(?:[^/\s:?#@\[\]]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?(?:/[^\s?#]*)?$"
)


def _valid_url(url: str) -> bool:
    """An http(s) origin (IPv6 literals in brackets), optional port 1-65535 and path."""
    match = _URL.match(url)
    return match is not None and (match["port"] is None or 1 <= int(match["port"]) <= 65535)


def _avail() -> str:
    names = sorted(policy_registry.POLICIES)
    return f"; available: {', '.join(names)}" if names else ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"{type(value).__name__} {_show(value)}"
    )


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, bool) else str(value).lower()


def _msgspec_message(message: str, value: Any, show_value: bool = True) -> str:
    message = re.sub(r" - at `\$[^`]*`$", "", message)
    message = message[:1].lower() + message[1:]
    if show_value and ", got" not in message:
        message += f"; got {_show(value)}"
    return message.replace(", got `", "; got `")


def check_text(
    text: str, *, env: Mapping[str, str] | None = None, for_start: bool = False
) -> tuple[LoadedConfig | None, list[Problem]]:
    """Check a config's YAML text; returns the config (None on errors) and all problems."""
    try:
        data, smap = load_yaml(text)
    except YamlSyntaxError as exc:
        return None, [Problem("error", (), exc.line, exc.message)]
    checker = _Checker(smap, os.environ if env is None else env, for_start)
    for path, line in smap.duplicates:
        checker.problems.append(Problem("error", path, line, "duplicate key"))
    if data is None:
        checker.add((), "the file is empty; expected a mapping with at least 'providers'")
    else:
        checker.root = data
        checker.walk(data, Config, ())
    problems = sorted(checker.problems, key=lambda p: (p.line, p.severity != "error"))
    if any(p.severity == "error" for p in problems):
        return None, problems
    config = msgspec.convert(data, Config)
    options = {
        name: msgspec.convert(opts or {}, policy_registry.POLICIES[name].Options)
        for name, opts in config.policy.items()
    }
    group_options = {
        group.id: {
            name: msgspec.convert(
                {**(config.policy.get(name) or {}), **(opts or {})},
                policy_registry.POLICIES[name].Options,
            )
            for name, opts in group.policy.items()
        }
        for group in config.consumers.groups
    }
    loaded = LoadedConfig(config, options, "", tuple(problems), group_options, text=text)
    return loaded, problems


def check_file(
    filename: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    for_start: bool = False,
) -> tuple[LoadedConfig | None, list[Problem]]:
    """`check_text` on a file; an unreadable file is itself a problem."""
    name = os.fspath(filename)
    try:
        text = FsPath(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem("error", (), 0, f"cannot read the file: {exc}")]
    loaded, problems = check_text(text, env=env, for_start=for_start)
    if loaded is not None:
        loaded = dataclasses.replace(loaded, filename=name)
    return loaded, problems


def load_config(
    filename: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Load a config for starting the gateway; raises `ConfigError` on any error."""
    loaded, problems = check_file(filename, env=env, for_start=True)
    if loaded is None:
        raise ConfigError(os.fspath(filename), [p for p in problems if p.severity == "error"])
    return loaded
