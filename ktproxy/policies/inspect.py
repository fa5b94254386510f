"""Dry runs: what each policy of a compiled chain would do to one text.

The console's playground asks "what happens to this message?". The answer must be
what the gateway does, so nothing here decides anything itself: the detectors and
scanners are the ones the policy objects hold, and the verdicts and rewritten texts
come from the policies' own code — `prompt-injection`'s `assess` (what its request
hook records and enforces, findings included), and the other policies' request and
response hooks called on a throw-away `RequestContext` built around the text. What a
hook does not report — the spans of what was found — is read from the same scanner
the hook used.

A dry run never calls `on_complete` (no audit record) and never reaches a provider:
policies do not know providers. Policies this module has no dry run for are reported
by which hooks they have, and left alone.
"""

from __future__ import annotations

import inspect as pyinspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ktproxy.context import RequestContext
from ktproxy.policies.audit_logger import AuditLogger
from ktproxy.policies.base import Policy, PolicyViolation
from ktproxy.policies.pii_detector import PIIDetector
from ktproxy.policies.prompt_injection import PromptInjection
from ktproxy.scan import KINDS, scan

Direction = Literal["request", "response"]
_RESPONSE_HOOKS = frozenset(("on_response", "stream_filter", "tool_args_filter"))


@dataclass(slots=True)
class Finding:
    """One thing a policy found, with its span in code points of the text it scanned."""

    rule: str | None
    kind: str | None
    start: int
    end: int
    text: str
    source: str = "text"
    weight: float | None = None
    # What the value became (pseudonymize: its placeholder); None when not known.
    replacement: str | None = None


@dataclass(slots=True)
class PolicyReport:
    """What one policy would do; `output_text` is None when it would not rewrite."""

    policy: str
    applies: bool
    action: str | None = None
    code: str | None = None
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    output_text: str | None = None
    note: str | None = None
    score: float | None = None
    threshold: float | None = None
    # The text this policy was given, when an earlier policy had rewritten it (the
    # findings' spans point into it); None when it is the submitted text.
    scanned_text: str | None = None
    blocked: bool = False
    message: str | None = None


def _context(text: str, direction: Direction, role: str, consumer: str) -> RequestContext:
    # No headers: in particular no conversation id, so `pii-detector` pseudonymises per
    # request and never writes to the shared pseudonym vault.
    ctx = RequestContext("playground", "chat.completions", b"", "", False, consumer=consumer)
    # Request hooks read `ctx.body`; response hooks are given their body separately.
    messages = [{"role": role if direction == "request" else "user", "content": text}]
    ctx.adopt_body({"messages": messages})
    return ctx


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if pyinspect.isawaitable(result):
        awaited: Awaitable[Any] = result
        return await awaited
    return result


async def _run_hook(
    policy: Policy, text: str, direction: Direction, role: str, consumer: str
) -> tuple[RequestContext, str, PolicyViolation | None]:
    """Run the policy's real hook for `direction` on `text`: (ctx, text after, block)."""
    ctx = _context(text, direction, role, consumer)
    try:
        if direction == "request":
            await _call(policy.on_request, ctx)  # type: ignore[attr-defined]
            after = ctx.body["messages"][0]["content"]
        else:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            body: dict[str, Any] = {"choices": [{"index": 0, "message": message}]}
            await _call(policy.on_response, ctx, body)  # type: ignore[attr-defined]
            after = message["content"]
    except PolicyViolation as violation:
        return ctx, text, violation
    return ctx, after if isinstance(after, str) else text, None


async def _prompt_injection(
    policy: PromptInjection, text: str, direction: Direction, role: str, consumer: str
) -> PolicyReport:
    report = PolicyReport(policy.name, applies=False)
    if direction != "request":
        report.note = "prompt-injection checks requests only; responses pass it unchanged"
        return report
    if role not in policy.roles:
        roles = ", ".join(sorted(policy.roles))
        report.note = f"messages of role {role!r} are not scanned (roles: {roles})"
        return report
    report.applies = True
    report.threshold = policy.detector.threshold
    # What `on_request` records and enforces, from one scan: its findings give the spans.
    assessment = policy.assess([{"role": role, "content": text}])
    if assessment is None:
        report.action, report.score = "none", 0.0
        return report
    report.score = assessment.score
    report.findings = [
        Finding(f"{f.family}.{f.rule}", None, f.start, f.end, text[f.start : f.end], f.source,
                f.weight)
        for f in sorted(assessment.findings, key=lambda f: (f.start, f.end))
    ]  # fmt: skip
    report.action, report.code = assessment.decision.action, assessment.decision.code
    violation = assessment.violation
    if violation is not None:
        report.blocked, report.code, report.message = True, violation.code, violation.message
    return report


def _pii_applies(policy: PIIDetector, direction: Direction) -> bool:
    hooks = policy.enabled_hooks()
    return "on_request" in hooks if direction == "request" else "on_response" in hooks


async def _pii(
    policy: PIIDetector, text: str, direction: Direction, role: str, consumer: str
) -> PolicyReport:
    report = PolicyReport(policy.name, applies=_pii_applies(policy, direction))
    if not report.applies:
        report.note = f"pii-detector is set to direction: {policy.options.direction}"
        return report
    if direction == "response" and policy.pseudonymize:
        report.action = "none"
        report.note = (
            "with pseudonymize, responses are not scanned: the request's placeholders are "
            "restored to the original values"
        )
        report.output_text = None
        return report
    # The scanner and kind mask the policy's hooks use (`redact_text` over `policy.mask`).
    matches, _ = scan(text, policy.mask, True, 0)
    ctx, after, violation = await _run_hook(policy, text, direction, role, consumer)
    table = ctx.state.get(policy.name + ".pseudonyms")
    forward: dict[str, str] = getattr(table, "forward", {}) if table is not None else {}
    for start, end, kind in matches:
        value = text[start:end]
        report.findings.append(
            Finding(None, KINDS[kind], start, end, value, replacement=forward.get(value))
        )
        report.counts[KINDS[kind]] = report.counts.get(KINDS[kind], 0) + 1
    report.action = policy.options.action if matches else "none"
    if violation is not None:
        report.blocked, report.code, report.message = True, violation.code, violation.message
    elif after != text:
        report.output_text = after
    return report


def _audit(policy: AuditLogger, direction: Direction) -> PolicyReport:
    content = (
        "the request as sent upstream and the answer as returned, after the policies before it"
        if policy.options.store_content == "redacted"
        else "content not stored"
    )
    return PolicyReport(
        policy.name, applies=True, action="log", note=f"would write an audit record ({content})"
    )


def _other(policy: Policy, direction: Direction) -> PolicyReport:
    hooks = policy.enabled_hooks()
    applies = "on_request" in hooks if direction == "request" else bool(hooks & _RESPONSE_HOOKS)
    return PolicyReport(policy.name, applies=applies, note="no dry run for this policy")


async def inspect_policy(
    policy: Policy, text: str, direction: Direction, role: str = "user", consumer: str = ""
) -> PolicyReport:
    """What `policy` would do to `text` as a message of `role` (request) or as the
    assistant's answer (response)."""
    if isinstance(policy, PromptInjection):
        return await _prompt_injection(policy, text, direction, role, consumer)
    if isinstance(policy, PIIDetector):
        return await _pii(policy, text, direction, role, consumer)
    if isinstance(policy, AuditLogger):
        return _audit(policy, direction)
    return _other(policy, direction)


@dataclass(slots=True)
class ChainReport:
    """The chain's dry run: every policy's report and the overall outcome."""

    reports: list[PolicyReport]
    decision: Literal["block", "redact", "log", "allow"]
    output_text: str | None
    blocked_by: str | None = None
    code: str | None = None
    message: str | None = None


async def inspect_chain(
    policies: tuple[Policy, ...],
    text: str,
    direction: Direction,
    role: str = "user",
    consumer: str = "",
) -> ChainReport:
    """Every policy in chain order, each given the text as the ones before it left it
    (as the gateway's hooks run). After a block the rest still report what they would
    find, on the text as it was when the block happened; the outcome is the block."""
    reports: list[PolicyReport] = []
    current = text
    block: PolicyReport | None = None
    for policy in policies:
        report = await inspect_policy(policy, current, direction, role, consumer)
        if current != text and report.applies:
            report.scanned_text = current
        if report.blocked and block is None:
            block = report
        if report.output_text is not None and block is None:
            current = report.output_text
        reports.append(report)
    if block is not None:
        return ChainReport(reports, "block", None, block.policy, block.code, block.message)
    if current != text:
        decision: Literal["block", "redact", "log", "allow"] = "redact"
    elif any(r.findings for r in reports if r.applies):
        decision = "log"
    else:
        decision = "allow"
    return ChainReport(reports, decision, current)
