"""`prompt-injection`: blocks (or logs) requests that try to take over the model.

Scans the messages of the configured roles — by default what the user wrote and
what tools returned (indirect injection) — with the `InjectionDetector`. A block is
HTTP 422 with code `prompt_injection.<family>`; every decision is recorded on the
request context with its rules (never the prompt text).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import Meta

from ktproxy.context import Decision, RequestContext
from ktproxy.policies.base import Policy, PolicyViolation
from ktproxy.scan.injection import Finding, InjectionDetector

NAME = "prompt-injection"

_FAMILY_TEXT = {
    "instruction_override": "tries to override the model's instructions",
    "system_prompt_exfiltration": "tries to extract the system prompt",
    "persona_jailbreak": "tries to switch the model into an unrestricted persona",
    "role_injection": "fakes a system or assistant turn",
    "custom": "matches a phrase blocked by this gateway",
}


class PromptInjectionOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options of `prompt-injection`."""

    action: Literal["block", "log"] = "block"
    # Sum of the strongest weight of each distinct rule found; 1.0 = one strong signal.
    threshold: Annotated[float, Meta(gt=0, le=10)] = 1.0
    roles: tuple[Literal["user", "tool", "function", "system", "developer", "assistant"], ...] = (
        "user",
        "tool",
        "function",
    )
    extra_phrases: tuple[Annotated[str, Meta(min_length=3)], ...] = ()
    allow_phrases: tuple[Annotated[str, Meta(min_length=3)], ...] = ()
    # Decode base64 / hex / rot13 payloads and scan them too.
    decode_payloads: bool = True


@functools.lru_cache(maxsize=16)
def build_detector(
    extra_phrases: tuple[str, ...] = (),
    allow_phrases: tuple[str, ...] = (),
    threshold: float = 1.0,
    decode: bool = True,
) -> InjectionDetector:
    """The detector for these options (built once, shared: it is immutable)."""
    return InjectionDetector(extra_phrases, allow_phrases, threshold, decode)


def _texts(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
    return []


class Assessment(NamedTuple):
    """The findings in a request's messages, their score, and what follows from them."""

    findings: list[Finding]
    score: float
    decision: Decision
    violation: PolicyViolation | None  # set when the request is to be blocked


class PromptInjection(Policy):
    """Detects instruction overrides, prompt exfiltration, jailbreak personas and fake turns."""

    name = NAME
    Options = PromptInjectionOptions

    def __init__(self, options: PromptInjectionOptions) -> None:
        super().__init__(options)
        self.detector = build_detector(
            options.extra_phrases,
            options.allow_phrases,
            options.threshold,
            options.decode_payloads,
        )
        self.roles = frozenset(options.roles)

    def assess(self, messages: list[Any]) -> Assessment | None:
        """What this policy makes of `messages` (None: nothing found). `on_request`
        records and enforces it; the playground shows it."""
        findings: list[Finding] = []
        for message in messages:
            if isinstance(message, dict) and message.get("role") in self.roles:
                for text in _texts(message):
                    findings += self.detector.findings(text)
        if not findings:
            return None
        score = self.detector.score(findings)
        strongest = max(findings, key=lambda f: f.weight)
        family = strongest.family
        detail = {f"{f.family}.{f.rule}": 1 for f in findings}
        attack = score >= self.detector.threshold
        action = self.options.action if attack else "log"
        decision = Decision(NAME, action, f"prompt_injection.{family}", detail)
        violation = None
        if attack and self.options.action == "block":
            violation = PolicyViolation(
                NAME,
                family,
                f"The request was blocked: it {_FAMILY_TEXT.get(family, 'is an injection')}.",
            )
        return Assessment(findings, score, decision, violation)

    def on_request(self, ctx: RequestContext) -> None:
        """Before the request leaves: scan the configured roles' messages."""
        messages = ctx.body.get("messages")
        if not isinstance(messages, list):
            return
        assessment = self.assess(messages)
        if assessment is None:
            return
        ctx.decisions.append(assessment.decision)
        if assessment.violation is not None:
            raise assessment.violation
