"""OpenAI-shaped errors: the one way the gateway tells a client something went wrong.

Every failure a client can see — bad input, unknown model, policy block, upstream
trouble — is a `GatewayError` rendered as
`{"error": {"message", "type", "param", "code"}}` with the matching HTTP status, so
the client's SDK raises its usual exception (`openai.APIStatusError` and friends).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def error_object(self) -> dict[str, Any]:
        """The inner `error` object (also used for SSE error events)."""
        obj: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        obj.update(self.extra)
        return obj

    def body(self) -> bytes:
        """The JSON response body."""
        return orjson.dumps({"error": self.error_object()})


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    """HTTP 400: the request cannot be understood."""
    return GatewayError(400, message, type="invalid_request_error", param=param, code=code)


def model_not_found(model: str) -> GatewayError:
    """HTTP 404: no target routes this model name."""
    return GatewayError(
        404,
        f"The model `{model}` does not exist or is not routed by this gateway.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def payload_too_large(limit: int) -> GatewayError:
    """HTTP 413: the body is over `gateway.max_body_bytes`."""
    return GatewayError(
        413,
        f"Request body exceeds the gateway's limit of {limit} bytes.",
        type="invalid_request_error",
        code="request_too_large",
    )


def request_timeout(what: str, seconds: float) -> GatewayError:
    """HTTP 408: the client did not send `what` within `seconds`."""
    return GatewayError(
        408,
        f"The client did not send the request {what} within {seconds:g} s.",
        type="invalid_request_error",
        code="request_timeout",
        headers={"Connection": "close"},
    )


def upstream_unreachable(target: str, reason: str) -> GatewayError:
    """HTTP 502: the upstream could not be reached or broke the connection."""
    return GatewayError(
        502,
        f"Upstream `{target}` failed: {reason}.",
        type="upstream_error",
        code="upstream_unavailable",
    )


def upstream_timeout(target: str, phase: str, seconds: float) -> GatewayError:
    """HTTP 504: the upstream did not answer in time (`phase`: connect, first_byte, idle)."""
    return GatewayError(
        504,
        f"Upstream `{target}` timed out ({phase} timeout of {seconds:g}s).",
        type="upstream_error",
        code=f"upstream_timeout.{phase}",
    )


def policy_violation(policy: str, code: str, message: str) -> GatewayError:
    """HTTP 422: a policy blocked the exchange."""
    return GatewayError(422, message, type="policy_violation", code=code, extra={"policy": policy})


def unauthorized(presented: bool) -> GatewayError:
    """401: the gateway requires a key of one of its consumer groups."""
    message = (
        "The gateway key is not valid."
        if presented
        else "A gateway key is required: send it as x-kt-api-key or as the bearer token."
    )
    return GatewayError(401, message, type="invalid_request_error", code="invalid_api_key")


def rate_limited(group: str, kind: str, limit: int, retry_after: float) -> GatewayError:
    """429 with `Retry-After` (whole seconds, at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    unit = "requests" if kind == "requests" else "tokens"
    return GatewayError(
        429,
        f"Rate limit reached for consumer group `{group}`: {limit} {unit} per minute. "
        f"Try again in {seconds} s.",
        type=unit,
        code="rate_limit_exceeded",
        headers={"Retry-After": str(seconds)},
    )


def budget_exceeded(
    group: str, period: str, limit: int, resets_at: str, retry_after: float
) -> GatewayError:
    """429 naming the spent budget, with `Retry-After` until it is renewed."""
    seconds = max(1, math.ceil(retry_after))
    return GatewayError(
        429,
        f"Token budget of consumer group `{group}` is spent: {limit} tokens per {period} "
        f"(UTC). It renews at {resets_at}, in {seconds} s.",
        type="tokens",
        code="budget_exceeded",
        headers={"Retry-After": str(seconds)},
    )


def state_unavailable(group: str, feature: str, retry_after: float) -> GatewayError:
    """429: the counters of `feature` cannot be read and it is set to fail closed."""
    seconds = max(1, math.ceil(retry_after))
    return GatewayError(
        429,
        f"The {feature} of consumer group `{group}` cannot be checked (the state backend "
        f"is unavailable), so the request is refused. Try again in {seconds} s.",
        type="requests",
        code="state_backend_unavailable",
        headers={"Retry-After": str(seconds)},
    )


def backend_unavailable(feature: str, retry_after: float) -> GatewayError:
    """503: a policy's state (e.g. `pseudonyms`) cannot be read and it fails closed."""
    seconds = max(1, math.ceil(retry_after))
    return GatewayError(
        503,
        f"The {feature} of this request cannot be kept (the state backend is unavailable), "
        f"so the request is refused. Try again in {seconds} s.",
        type="server_error",
        code="state_backend_unavailable",
        headers={"Retry-After": str(seconds)},
    )


def model_not_allowed(model: str, group: str) -> GatewayError:
    """404 like OpenAI's: the model does not exist *for this caller*."""
    return GatewayError(
        404,
        f"The model `{model}` does not exist or consumer group `{group}` does not have "
        "access to it.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def overloaded(kind: str, limit: int, retry_after: int) -> GatewayError:
    """503 with `Retry-After`: this worker already serves `limit` requests (or streams)."""
    return GatewayError(
        503,
        f"The gateway is at its limit of {limit} concurrent {kind}; try again in {retry_after} s.",
        type="server_error",
        code="gateway_overloaded",
        headers={"Retry-After": str(retry_after)},
    )
