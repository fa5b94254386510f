"""The typed policy config: msgspec Structs for every section of the YAML file.

The Structs say what a well-formed file holds (types, bounds, defaults). Rules that
need more than one field or a registry (known providers and policies, duplicate ids,
environment variables) live in `ktproxy.configcheck`, which also adds file and line
to every message. A loaded `Config` is never mutated; each worker derives its runtime
(router, policy chain, upstream pools) from it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

PositiveSeconds = Annotated[float, Meta(gt=0)]
Port = Annotated[int, Meta(ge=1, le=65535)]
NonEmpty = Annotated[str, Meta(min_length=1)]
LogLevel = Literal["debug", "info", "warning", "error"]
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


class AnthropicOptions(Struct, forbid_unknown_fields=True, frozen=True):
    """How the `anthropic` provider talks to the Messages API."""

    # The `anthropic-version` header sent upstream.
    version: NonEmpty = "2023-06-01"
    # Anthropic requires max_tokens; used when the OpenAI request sets none.
    max_tokens: Annotated[int, Meta(ge=1)] = 4096


class VertexOptions(Struct, forbid_unknown_fields=True, frozen=True):
    """How the `google-vertex` provider reaches Gemini.

    `api: gemini` is the Gemini API (`generativelanguage.googleapis.com`, key in
    `x-goog-api-key`); `api: vertex` is Vertex AI (`<location>-aiplatform.googleapis.com`,
    project and location in the path, an OAuth bearer token as the key).
    """

    api: Literal["gemini", "vertex"] = "gemini"
    project: NonEmpty | None = None
    location: NonEmpty = "us-central1"


class OllamaOptions(Struct, forbid_unknown_fields=True, frozen=True):
    """Which of Ollama's APIs the `ollama` provider uses."""

    # openai: its OpenAI-compatible /v1/chat/completions; native: /api/chat (NDJSON).
    api: Literal["openai", "native"] = "openai"


class TargetTLS(Struct, forbid_unknown_fields=True, frozen=True):
    """How an https target's certificate is checked (default: the system CA store)."""

    ca_file: str | None = None  # PEM bundle trusted instead of the system store
    verify: bool = True  # false: no certificate or hostname check (lint warns)


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
    anthropic: AnthropicOptions | None = None
    vertex: VertexOptions | None = None
    ollama: OllamaOptions | None = None
    tls: TargetTLS | None = None


class Providers(Struct, forbid_unknown_fields=True, frozen=True):
    """Upstream targets, plus defaults shared by all of them."""

    targets: list[Target]
    timeouts: Timeouts = Timeouts()


class Retries(Struct, forbid_unknown_fields=True, frozen=True):
    """Tries of one target before falling back to the next (1: no retry)."""

    attempts: Annotated[int, Meta(ge=1, le=10)] = 1
    # Exponential backoff with full jitter between tries of one target; an upstream's
    # Retry-After is honoured up to max_backoff_ms.
    backoff_ms: Annotated[float, Meta(ge=0)] = 100.0
    max_backoff_ms: Annotated[float, Meta(ge=0)] = 2000.0


class CircuitBreaker(Struct, forbid_unknown_fields=True, frozen=True):
    """Rests a target after `failures` failed calls in a row, for `cooldown_s`."""

    failures: Annotated[int, Meta(ge=1)] = 5
    cooldown_s: Annotated[float, Meta(gt=0)] = 30.0


FallbackOn = Literal["connect", "timeout", "5xx", "429"]


class ModelRoute(Struct, forbid_unknown_fields=True, frozen=True):
    """A model name clients send, served by several targets."""

    name: NonEmpty
    # In fallback order; with `weights`, the first target of a request is drawn by
    # weight and the others follow in this order.
    targets: Annotated[list[NonEmpty], Meta(min_length=1)]
    weights: list[Annotated[float, Meta(gt=0)]] | None = None

    def __post_init__(self) -> None:
        if self.weights is not None and len(self.weights) != len(self.targets):
            raise ValueError("weights must have one entry per target")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError("a target appears twice in targets")


class Routing(Struct, forbid_unknown_fields=True, frozen=True):
    """Fallbacks, retries, load balancing and circuit breaking across targets."""

    models: list[ModelRoute] = []
    retries: Retries = Retries()
    fallback_on: tuple[FallbackOn, ...] = ("connect", "timeout", "5xx", "429")
    # null: never rest a target
    circuit_breaker: CircuitBreaker | None = CircuitBreaker()


class Policies(Struct, forbid_unknown_fields=True, frozen=True):
    """Which policies run, in order."""

    chain: list[NonEmpty] = []


class KeyRef(Struct, forbid_unknown_fields=True, frozen=True):
    """A gateway key: the environment variable holding it, or its sha256 hex digest.

    The file never holds a key in plain text.
    """

    env: NonEmpty | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.sha256 is None):
            raise ValueError("set exactly one of env and sha256")
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ValueError("sha256 must be 64 lower-case hex digits")


class RateLimits(Struct, forbid_unknown_fields=True, frozen=True):
    """Per-group limits; None means no limit of that kind."""

    requests_per_minute: Annotated[int, Meta(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Meta(ge=1)] | None = None


class Budgets(Struct, forbid_unknown_fields=True, frozen=True):
    """Per-group token budgets per UTC calendar day and month; None means no budget.

    Spent from the providers' reported usage; checked when a request is admitted, so
    requests in flight when the budget runs out may overshoot it by their own usage.
    """

    tokens_per_day: Annotated[int, Meta(ge=1)] | None = None
    tokens_per_month: Annotated[int, Meta(ge=1)] | None = None


class ConsumerGroup(Struct, forbid_unknown_fields=True, frozen=True):
    """A set of keys sharing a policy chain, option overrides, models and limits."""

    id: NonEmpty
    keys: list[KeyRef] = []
    # Replaces policies.chain for this group (None: the global chain).
    chain: list[NonEmpty] | None = None
    # Per-policy options merged over the global `policy:` section, key by key.
    policy: dict[str, dict[str, Any] | None] = {}
    # Model names this group may ask for (None: every routable model).
    models: list[NonEmpty] | None = None
    limits: RateLimits | None = None
    budgets: Budgets | None = None


class Consumers(Struct, forbid_unknown_fields=True, frozen=True):
    """Who may call the gateway, and with which rules."""

    # True: a request without a known gateway key gets 401. False: it is served as
    # `default_group`.
    require_key: bool = False
    default_group: NonEmpty = "default"
    groups: list[ConsumerGroup] = []


class Admin(Struct, forbid_unknown_fields=True, frozen=True):
    """Access to the admin API (`/v1/kt/...`); without a key it is disabled."""

    key: KeyRef | None = None


OnBackendError = Literal["fail-open", "fail-closed"]


class RedisState(Struct, forbid_unknown_fields=True, frozen=True):
    """Where the shared counters live when `state.backend` is redis."""

    # The environment variable holding the URL (redis://, rediss:// or unix://): it may
    # carry a password, so the file never holds it.
    url: SecretRef
    # Every key starts with it: gateways sharing limits share the prefix.
    key_prefix: NonEmpty = "ktproxy:"
    connect_timeout: Annotated[float, Meta(gt=0, le=60)] = 0.5
    command_timeout: Annotated[float, Meta(gt=0, le=60)] = 0.5
    max_connections: Annotated[int, Meta(ge=1, le=10000)] = 64
    # After a failed call the backend is not asked again for this long; requests get
    # the feature's `on_backend_error` at once instead of each waiting for a timeout.
    retry_interval: Annotated[float, Meta(gt=0, le=300)] = 1.0
    # The environment variable holding the secret that encrypts pseudonymised values
    # (`pii-detector` with `scope: conversation`) at rest; at least 16 characters.
    encryption_key_ref: SecretRef | None = None


class RateLimitState(Struct, forbid_unknown_fields=True, frozen=True):
    """What rate limits do while the backend is unreachable. Default fail-open: a limit
    protects capacity, and the providers keep their own; refusing every request because
    a counter store is down would turn its outage into the gateway's."""

    on_backend_error: OnBackendError = "fail-open"


class BudgetState(Struct, forbid_unknown_fields=True, frozen=True):
    """What budgets do while the backend is unreachable. Default fail-closed: a budget
    caps money, and tokens spent while it could not be checked cannot be taken back."""

    on_backend_error: OnBackendError = "fail-closed"


class PseudonymState(Struct, forbid_unknown_fields=True, frozen=True):
    """What conversation-scoped pseudonyms do while the backend is unreachable. Default
    fail-closed: a request with a conversation id is refused (503) rather than sent with
    placeholders that a later turn could not restore, or restored to the wrong values.
    fail-open: that request gets per-request placeholders, as without the header."""

    on_backend_error: OnBackendError = "fail-closed"


class State(Struct, forbid_unknown_fields=True, frozen=True):
    """Where rate-limit and budget counters are kept (DESIGN §6).

    memory: in this process (each worker its own view; needs no server). redis: one
    Redis shared by every gateway and worker, so N gateways enforce one limit.
    """

    backend: Literal["memory", "redis"] = "memory"
    redis: RedisState | None = None
    rate_limits: RateLimitState = RateLimitState()
    budgets: BudgetState = BudgetState()
    pseudonyms: PseudonymState = PseudonymState()

    def __post_init__(self) -> None:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("backend redis needs a `redis:` section with its url")


class Gateway(Struct, forbid_unknown_fields=True, frozen=True):
    """Listener and request limits of the gateway process."""

    host: NonEmpty = "127.0.0.1"
    port: Port = 41002
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024
    # Seconds a client gets to send a request's head (request line and headers), from
    # its first byte (from the connect for a connection's first request), and to send
    # its whole body; slower clients get a 408 and are disconnected.
    header_timeout: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    body_timeout: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    log_level: LogLevel = "info"
    # auto: key=value text when stderr is a terminal, JSON lines otherwise.
    log_format: Literal["auto", "json", "text"] = "auto"
    # Seconds in-flight requests get to finish after SIGTERM.
    drain_timeout: Annotated[float, Meta(ge=0)] = 30.0
    # Seconds the listener keeps accepting after SIGTERM while /readyz already says 503,
    # so a load balancer stops sending before connections are refused.
    drain_grace: Annotated[float, Meta(ge=0)] = 0.0
    # Names this gateway's audit hash chain (default: host name and process id).
    instance: NonEmpty | None = None
    # Per worker: requests (streams included) and streams served at once; one more is
    # refused with 503 and `Retry-After: overload_retry_after` (seconds).
    max_concurrent_requests: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    max_concurrent_streams: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    overload_retry_after: Annotated[int, Meta(ge=1, le=3600)] = 1


class Config(Struct, forbid_unknown_fields=True, frozen=True):
    """The whole policy config file."""

    providers: Providers
    pack: Pack | None = None
    gateway: Gateway = Gateway()
    policies: Policies = Policies()
    routing: Routing = Routing()
    consumers: Consumers = Consumers()
    admin: Admin = Admin()
    state: State = State()
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
