"""The error middleware: every failure leaves as OpenAI-shaped JSON.

`GatewayError`s carry their own status and body. aiohttp's own HTTP exceptions
(unknown path, wrong method) are rewritten into the same shape, and anything
unexpected becomes a 500 with a generic message — never a traceback or an HTML page.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from ktproxy.errors import GatewayError

log = logging.getLogger("ktproxy.api")

_HTTP_TYPES = {
    404: ("not_found_error", "Unknown path {path}."),
    405: ("invalid_request_error", "Method {method} is not allowed on {path}."),
}


def error_response(error: GatewayError) -> web.Response:
    """The JSON response for `error`."""
    return web.Response(
        status=error.status,
        body=error.body(),
        content_type="application/json",
        headers=error.headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into an OpenAI-shaped JSON error response."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind, template = _HTTP_TYPES.get(exc.status, ("invalid_request_error", "{reason}"))
        message = template.format(path=request.path, method=request.method, reason=exc.reason)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(GatewayError(exc.status, message, type=kind, headers=headers))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            GatewayError(500, "The gateway failed to handle the request.", type="server_error")
        )
