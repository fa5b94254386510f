"""`GET /v1/kt/config`: the config a worker serves, for the console's Policy page.

Shows the effective config (every default filled in), the YAML text as it was
loaded, its sha256, when it was loaded and from where, the lint of that text (the
checks `kt policy lint` runs, warnings included) and each consumer group's chain.

Secrets are masked everywhere in the answer: key digests (`sha256:`), values under
secret-sounding keys, passwords and credential parameters in URLs, and anything the
PII scanner takes for a provider secret become `********`. Environment variable
*names* (`{env: OPENAI_API_KEY}`) stay: they are what an operator needs to see, and
not secrets. The answer is built once per loaded config (a reload makes a new one).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import yaml
from aiohttp import web

from ktproxy.api.admin import admin_runtime
from ktproxy.configcheck import LoadedConfig, Problem, check_text
from ktproxy.runtime import Runtime
from ktproxy.scan import mask_of, scan
from ktproxy.state import STATE
from ktproxy.yamlsource import format_path

MASK = "********"

# Keys whose scalar values are secrets. `env` never is: it names a variable.
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_-])?(sha256|digest|key|password|passwd|pwd|secret|token|api[_-]?key|"
    r"private[_-]?key|credentials?|dsn|auth|authorization|cookie)$"
)
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@\"']*:)([^/\s@\"']+)(@)")
_URL_PARAM = re.compile(
    r"(?i)([?&](?:key|api[_-]?key|token|access[_-]?token|password|pwd|secret|sig|signature|"
    r"auth)=)([^&#\s\"']+)"
)
_HEX_DIGEST = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")
_SECRETS = mask_of(("SECRETS",))
_MIN_LITERAL = 6  # shorter masked values are not hunted for elsewhere in the text


# Keys that sound secret but hold a name or a mode: `client_key: forward`.
_NOT_SECRET = frozenset(("env", "client_key"))


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and key not in _NOT_SECRET and bool(_SECRET_KEY.match(key))


def mask_string(value: str, literals: Iterable[str] = ()) -> str:
    """`value` with every secret-like piece replaced by `MASK`."""
    for literal in literals:
        if literal in value:
            value = value.replace(literal, MASK)
    value = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), value)
    value = _URL_PARAM.sub(lambda m: m.group(1) + MASK, value)
    value = _HEX_DIGEST.sub(MASK, value)
    matches, _ = scan(value, _SECRETS, True, 0)
    for start, end, _kind in reversed(matches):
        value = value[:start] + MASK + value[end:]
    return value


def mask_data(data: Any, literals: Iterable[str] = (), key: object = None) -> Any:
    """Plain config data (mappings, lists, scalars) with secrets masked."""
    literals = tuple(literals)
    if isinstance(data, Mapping):
        return {k: mask_data(v, literals, k) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [mask_data(v, literals, key) for v in data]
    if _secret_key(key) and data is not None and not isinstance(data, bool):
        return MASK
    if isinstance(data, str):
        return mask_string(data, literals)
    return data


def _secret_scalars(node: yaml.Node, out: list[yaml.ScalarNode]) -> None:
    """The scalar nodes under a secret-sounding key, anywhere in the tree."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(value, yaml.ScalarNode):
                if isinstance(key, yaml.ScalarNode) and _secret_key(key.value) and value.value:
                    out.append(value)
            else:
                _secret_scalars(value, out)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _secret_scalars(item, out)


def mask_text(text: str) -> tuple[str, tuple[str, ...]]:
    """The YAML `text` with secrets masked, and the secret values it held (to mask
    them wherever else they show, such as in lint messages)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None
    nodes: list[yaml.ScalarNode] = []
    if root is not None:
        _secret_scalars(root, nodes)
    spans = sorted({(n.start_mark.index, n.end_mark.index): n for n in nodes}.items())
    # Longest first, so that a secret containing another is replaced whole.
    literals = tuple(
        sorted({n.value for n in nodes if len(n.value) >= _MIN_LITERAL}, key=len, reverse=True)
    )
    out: list[str] = []
    pos = 0
    for (start, end), _node in spans:
        if start < pos:  # nested in a span already masked
            continue
        original = text[start:end]
        out.append(text[pos:start])
        out.append(f'"{MASK}"' + ("\n" if original.endswith("\n") else ""))
        pos = end
    out.append(text[pos:])
    return mask_string("".join(out), literals), literals


def _problem(problem: Problem, filename: str, literals: Iterable[str]) -> dict[str, Any]:
    return {
        "severity": problem.severity,
        "path": format_path(problem.path),
        "line": problem.line,
        "message": mask_string(problem.format(filename), literals),
    }


def lint(loaded: LoadedConfig, env: Mapping[str, str], literals: Iterable[str]) -> dict[str, Any]:
    """The checks of `kt policy lint` on the loaded text, in the gateway's environment."""
    filename = loaded.filename or "policy-config.yaml"
    if loaded.text:
        _, problems = check_text(loaded.text, env=env)
    else:  # built without its text: what the load itself reported
        problems = list(loaded.warnings)
    errors = sum(p.severity == "error" for p in problems)
    return {
        "ok": errors == 0,
        "errors": errors,
        "warnings": len(problems) - errors,
        "problems": [_problem(p, filename, literals) for p in problems],
    }


def _chains(runtime: Runtime) -> dict[str, list[str]]:
    table = runtime.consumers
    chains = {table.default.id: list(table.default.chain.names)}
    for gid, group in table.groups.items():
        chains[gid] = list(group.chain.names)
    return chains


def _view(loaded: LoadedConfig, env: Mapping[str, str]) -> dict[str, Any]:
    """Everything of the answer that depends on the loaded config only."""
    text, literals = mask_text(loaded.text)
    return {
        "loaded_at": loaded.loaded_at,
        "source": loaded.filename or None,
        "sha256": hashlib.sha256(loaded.text.encode("utf-8")).hexdigest(),
        "lint": lint(loaded, env, literals),
        "config": mask_data(msgspec.to_builtins(loaded.config), literals),
        "text": text,
    }


# Per loaded config (held, so that its id cannot be reused while cached): its view.
_CACHE: dict[int, tuple[LoadedConfig, Mapping[str, str], dict[str, Any]]] = {}
_CACHE_SIZE = 8


async def _cached_view(loaded: LoadedConfig, env: Mapping[str, str]) -> dict[str, Any]:
    hit = _CACHE.get(id(loaded))
    if hit is not None and hit[0] is loaded and hit[1] is env:
        return hit[2]
    view = await asyncio.to_thread(_view, loaded, env)  # lint may read files (CA bundles)
    while len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(loaded)] = (loaded, env, view)
    return view


async def get_config(request: web.Request) -> web.Response:
    """`GET /v1/kt/config`: the served config, masked, with its lint and chains."""
    runtime = admin_runtime(request)
    view = await _cached_view(runtime.loaded, request.app[STATE].env)
    body = {"object": "config", **view, "chains": _chains(runtime)}
    return web.json_response(body, dumps=lambda o: msgspec.json.encode(o).decode())
