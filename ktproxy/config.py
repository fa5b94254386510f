"""The typed policy config: msgspec Structs for every section of the YAML file.

The Structs say what a well-formed file holds (types, bounds, defaults). Rules that
need more than one field or a registry (known providers and policies, duplicate ids,
environment variables) live in `ktproxy.configcheck`, which also adds file and line
to every message. A loaded `Config` is never mutated; each worker derives its runtime
(router, policy chain, upstream pools) from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

PositiveSeconds = Annotated[float, Meta(gt=0)]
Port = Annotated[int, Meta(ge=1, le=65535)]
NonEmpty = Annotated[str, Meta(min_length=1)]
LogLevel = Literal["debug", "info", "warning", "error"]


class Pack(Struct, forbid_unknown_fields=True, frozen=True):
    """Identity of the policy pack this file describes."""

    name: NonEmpty
    version: NonEmpty
    enabled: bool = True


class SecretRef(Struct, forbid_unknown_fields=True, frozen=True):
    """Where a secret comes from; the file never holds the secret itself."""

    env: NonEmpty


class Timeouts(Struct, forbid_unknown_fields=True, frozen=True):
    """Upstream timeouts in seconds. `None` for `total` means no overall limit."""

    connect: PositiveSeconds = 10.0
    first_byte: PositiveSeconds = 60.0
    idle: PositiveSeconds = 60.0
    total: PositiveSeconds | None = 600.0


class MockOptions(Struct, forbid_unknown_fields=True, frozen=True):
    """How the local `mock` provider answers (no network, no key)."""

    mode: Literal["echo", "fixed"] = "echo"
    reply: str = "Hello from the ktproxy mock provider."
    chunk_chars: Annotated[int, Meta(ge=1)] = 4
    # Wait before answering (time to first byte), and between streamed chunks.
    latency_ms: Annotated[float, Meta(ge=0)] = 0.0
    chunk_delay_ms: Annotated[float, Meta(ge=0)] = 0.0


class Target(Struct, forbid_unknown_fields=True, frozen=True):
    """One upstream a model name can route to."""

    id: NonEmpty
    provider: NonEmpty
    model: NonEmpty
    base_url: str | None = None
    secret_key_ref: SecretRef | None = None
    # forward: a client's own provider key is used for its request; ignore: always
    # the gateway's key (the env var must then be set at start).
    client_key: Literal["forward", "ignore"] = "forward"
    timeouts: Timeouts | None = None
    max_connections: Annotated[int, Meta(ge=1, le=10000)] = 100
    mock: MockOptions | None = None


class Providers(Struct, forbid_unknown_fields=True, frozen=True):
    """Upstream targets, plus defaults shared by all of them."""

    targets: list[Target]
    timeouts: Timeouts = Timeouts()


class Policies(Struct, forbid_unknown_fields=True, frozen=True):
    """Which policies run, in order."""

    chain: list[NonEmpty] = []


class Gateway(Struct, forbid_unknown_fields=True, frozen=True):
    """Listener and request limits of the gateway process."""

    host: NonEmpty = "127.0.0.1"
    port: Port = 41002
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024
    log_level: LogLevel = "info"
    # Seconds in-flight requests get to finish after SIGTERM.
    drain_timeout: Annotated[float, Meta(ge=0)] = 30.0


class Config(Struct, forbid_unknown_fields=True, frozen=True):
    """The whole policy config file."""

    providers: Providers
    pack: Pack | None = None
    gateway: Gateway = Gateway()
    policies: Policies = Policies()
    # Per-policy options, keyed by policy name (null: the policy's defaults); each
    # value is validated against that policy's options Struct and stored decoded in
    # `LoadedConfig.policy_options`.
    policy: dict[str, dict[str, Any] | None] = {}


def normalise_base_url(url: str) -> str:
    """Strip a trailing slash and a trailing `/v1`, so `/v1/...` is never doubled."""
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url.rstrip("/")


def target_timeouts(config: Config, target: Target) -> Timeouts:
    """The timeouts that apply to `target` (its own, else the providers' default)."""
    return target.timeouts if target.timeouts is not None else config.providers.timeouts


def to_builtins(config: Config) -> Any:
    """The config as plain data (for round-trips and for showing it)."""
    return msgspec.to_builtins(config)
