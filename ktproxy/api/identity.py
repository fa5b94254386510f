"""Who is calling: the consumer group named by a request's gateway key."""

from __future__ import annotations

from aiohttp import web

from ktproxy.consumers import Group, Identity
from ktproxy.errors import unauthorized
from ktproxy.runtime import Runtime


def bearer(request: web.Request) -> str | None:
    """The bearer token of the request, if any."""
    auth = request.headers.get("Authorization")
    if auth is None:
        return None
    scheme, _, value = auth.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def identify(request: web.Request, runtime: Runtime, key_headers: tuple[str, ...] = ()) -> Identity:
    """The request's group from `x-kt-api-key`, or a gateway key sent as its bearer
    token (or in one of `key_headers`, where a surface's clients put their key)."""
    token = bearer(request)
    for name in key_headers:
        token = token or request.headers.get(name, "").strip() or None
    return runtime.consumers.identify(request.headers.get("x-kt-api-key"), token)


def caller_group(request: web.Request, runtime: Runtime) -> Group:
    """The caller's group, or 401 when a key is required and none matched."""
    identity = identify(request, runtime)
    if identity.group is None:
        raise unauthorized(identity.presented)
    return identity.group
