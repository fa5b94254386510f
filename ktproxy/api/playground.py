"""`POST /v1/kt/playground`: what a consumer group's policy chain would do to a text.

The console's Policy page sends a text, a direction and a group; the answer is the
dry run of that group's compiled chain — the very policy objects serving traffic —
from `ktproxy.policies.inspect`. Nothing is sent upstream and no audit record is
written. Admin key required, like every `/v1/kt/` endpoint.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec
from aiohttp import web

from ktproxy.api.admin import admin_runtime
from ktproxy.api.chat import read_body
from ktproxy.errors import GatewayError, bad_request
from ktproxy.policies.inspect import ChainReport, PolicyReport, inspect_chain

MAX_TEXT_BYTES = 1 << 20  # UTF-8 bytes of `text`
# JSON escapes may take up to 6 bytes per byte of text (`\u0001`); beyond this the
# body cannot hold a text within the limit.
_MAX_BODY_BYTES = 6 * MAX_TEXT_BYTES + 4096

Role = Literal["user", "tool", "function", "system", "developer", "assistant"]


class PlaygroundRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The body of a playground call."""

    text: str
    direction: Literal["request", "response"] = "request"
    consumer: str | None = None  # None: the default group
    role: Role = "user"  # the message's role (requests only)


_AT = re.compile(r"at `\$\.?([^`\[]*)")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def _param(message: str) -> str | None:
    for pattern in (_UNKNOWN, _MISSING, _AT):
        found = pattern.search(message)
        if found and found.group(1):
            return found.group(1)
    return None


def _too_large() -> GatewayError:
    return GatewayError(
        413,
        f"`text` exceeds the playground's limit of {MAX_TEXT_BYTES} bytes.",
        type="invalid_request_error",
        param="text",
        code="request_too_large",
    )


def decode(body: bytes) -> PlaygroundRequest:
    """The request body as a `PlaygroundRequest`; 400 naming the bad field."""
    try:
        req = msgspec.json.decode(body, type=PlaygroundRequest)
    except msgspec.ValidationError as exc:
        raise bad_request(f"Invalid playground request: {exc}", param=_param(str(exc))) from None
    except msgspec.DecodeError:
        raise bad_request("The body is not valid JSON.") from None
    if len(req.text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise _too_large()
    return req


def _report(report: PolicyReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "policy": report.policy,
        "applies": report.applies,
        "action": report.action,
        "code": report.code,
        "findings": [
            {
                "rule": f.rule,
                "kind": f.kind,
                "start": f.start,
                "end": f.end,
                "text": f.text,
                "source": f.source,
                "weight": f.weight,
                "replacement": f.replacement,
            }
            for f in report.findings
        ],
        "counts": report.counts,
        "output_text": report.output_text,
        "note": report.note,
        "scanned_text": report.scanned_text,
    }
    if report.threshold is not None:
        out["score"] = round(report.score or 0.0, 6)
        out["threshold"] = report.threshold
    return out


def _answer(
    req: PlaygroundRequest, consumer: str, names: tuple[str, ...], result: ChainReport
) -> dict[str, Any]:
    return {
        "object": "playground",
        "direction": req.direction,
        "consumer": consumer,
        "chain": list(names),
        "decision": result.decision,
        "blocked_by": result.blocked_by,
        "code": result.code,
        "message": result.message,
        "output_text": result.output_text,
        "policies": [_report(r) for r in result.reports],
    }


async def run_playground(request: web.Request) -> web.Response:
    """`POST /v1/kt/playground`: the dry run of one group's chain on one text."""
    runtime = admin_runtime(request)
    try:
        body = await read_body(request, _MAX_BODY_BYTES)
    except GatewayError as exc:
        if exc.status == 413:
            raise _too_large() from None
        raise
    req = decode(body)
    table = runtime.consumers
    if req.consumer is None or req.consumer == table.default.id:
        group = table.default
    else:
        found = table.groups.get(req.consumer)
        if found is None:
            raise GatewayError(
                404,
                f"No consumer group `{req.consumer}` in the loaded config.",
                type="invalid_request_error",
                param="consumer",
                code="consumer_not_found",
            )
        group = found
    result = await inspect_chain(
        group.chain.policies, req.text, req.direction, req.role, consumer=group.id
    )
    return web.json_response(
        _answer(req, group.id, group.chain.names, result),
        dumps=lambda o: msgspec.json.encode(o).decode(),
    )
