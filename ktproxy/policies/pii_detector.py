"""`pii-detector`: finds personal data and secrets in requests and responses.

Requests: every text a message can carry (string content, text parts, tool
results, tool-call arguments) is handled before anything leaves the gateway.
Responses: whole bodies, and streams through a `StreamRedactor` per choice whose
bounded hold-back keeps values split across chunks from leaking.

Actions: `redact` (`[REDACTED:EMAIL]`), `mask` (`j***@example.com`, `****1111`),
`block` (HTTP 422 on a request or whole response; an SSE error event on a stream,
before the value is sent), `pseudonymize` (stable per-request placeholders such as
`<EMAIL_1>` upstream, originals restored in the response, streamed too), `log`
(count only). Decisions carry counts by kind, never values.

Pseudonyms are per request by default. With `scope: conversation` and the request
carrying `conversation_header`, they come from the state backend's vault, keyed by
consumer group and conversation id: one value keeps one placeholder across turns and
gateways, for `conversation_ttl_s` seconds after the last turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ktproxy.context import Decision, RequestContext
from ktproxy.fleet.pseudonyms import MemoryPseudonyms, PseudonymVault, placeholder
from ktproxy.policies.base import Policy, PolicyViolation
from ktproxy.scan.kinds import GROUPS, KIND_INDEX, KINDS, mask_of
from ktproxy.scan.redactor import Replace, StreamRedactor, redact_text

if TYPE_CHECKING:
    from ktproxy.policies.resources import PolicyResources

EntityName = Literal[
    "EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IPV4", "IPV6", "IBAN", "OPENAI_KEY",
    "ANTHROPIC_KEY", "AWS_ACCESS_KEY", "GITHUB_TOKEN", "GITLAB_TOKEN", "SLACK_TOKEN",
    "JWT", "PRIVATE_KEY", "SECRETS", "IP_ADDRESS",
]  # fmt: skip

NAME = "pii-detector"


class PIIOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options of `pii-detector`."""

    action: Literal["redact", "mask", "block", "pseudonymize", "log"] = "redact"
    entities: tuple[EntityName, ...] = tuple(KINDS)  # type: ignore[arg-type]
    direction: Literal["request", "response", "both"] = "both"
    # `{kind}` is replaced by the entity name.
    placeholder: str = "[REDACTED:{kind}]"
    # Longest tail of a stream held back while it may still become a value.
    max_hold: Annotated[int, Meta(ge=32, le=65536)] = 256
    # pseudonymize: placeholders per request, or per conversation (see the module doc).
    scope: Literal["request", "conversation"] = "request"
    conversation_header: Annotated[str, Meta(min_length=1)] = "x-kt-conversation-id"
    conversation_ttl_s: Annotated[int, Meta(ge=1, le=90 * 86400)] = 86400

    def __post_init__(self) -> None:
        if self.scope == "conversation" and self.action != "pseudonymize":
            raise ValueError("scope: conversation applies to action: pseudonymize only")
        if "{kind}" not in self.placeholder:
            raise ValueError("placeholder must contain {kind}")
        if set(self.placeholder) & {'"', "\\", "<", ">"}:
            raise ValueError(
                "placeholder must not contain double quotes, backslashes or angle brackets"
            )


_PSEUDONYM = re.compile(r"<([A-Z_]+)_(\d+)>")


class _Pseudonyms:
    """Per-request value <-> placeholder tables (`<EMAIL_1>`)."""

    __slots__ = ("forward", "reverse", "counts")

    def __init__(self) -> None:
        self.forward: dict[str, str] = {}
        self.reverse: dict[str, str] = {}
        self.counts: dict[int, int] = {}

    def placeholder(self, value: str, kind: int) -> str:
        known = self.forward.get(value)
        if known is not None:
            return known
        number = self.counts.get(kind, 0) + 1
        self.counts[kind] = number
        token = placeholder(KINDS[kind], number)
        self.forward[value] = token
        self.reverse[token] = value
        return token

    def load(self, table: dict[str, str]) -> None:
        """Take a conversation's placeholder -> value table (before any `placeholder`)."""
        for token, value in table.items():
            match = _PSEUDONYM.fullmatch(token)
            kind = KIND_INDEX.get(match.group(1)) if match else None
            if match is None or kind is None:
                continue
            self.forward[value] = token
            self.reverse[token] = value
            self.counts[kind] = max(self.counts.get(kind, 0), int(match.group(2)))

    def restore(self, text: str) -> str:
        if "<" not in text:
            return text
        return _PSEUDONYM.sub(lambda m: self.reverse.get(m.group(0), m.group(0)), text)


class _RestoreFilter:
    """Streams pseudonymised text back, holding a tail that may be half a placeholder."""

    __slots__ = ("_names", "_pending")

    def __init__(self, names: _Pseudonyms) -> None:
        self._names = names
        self._pending = ""

    def feed(self, text: str) -> str:
        text = self._pending + text
        cut = text.rfind("<")
        if cut >= 0 and ">" not in text[cut:] and len(text) - cut <= 40:
            tail = text[cut + 1 :]
            if all(c.isupper() or c.isdigit() or c == "_" for c in tail):
                self._pending = text[cut:]
                return self._names.restore(text[:cut])
        self._pending = ""
        return self._names.restore(text)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return self._names.restore(text)


def mask_value(value: str, kind: int) -> str:
    """Partly hidden: the email's first character and domain, else the last 4 characters."""
    if kind == KIND_INDEX["EMAIL"]:
        local, _, domain = value.partition("@")
        return local[:1] + "*" * (len(local) - 1) + "@" + domain
    keep = 4
    out = []
    for c in reversed(value):
        if c.isalnum():
            out.append(c if keep > 0 else "*")
            keep -= 1
        else:
            out.append(c)
    return "".join(reversed(out))


class PIIDetector(Policy):
    """Redacts, masks, blocks, pseudonymises or logs personal data and secrets."""

    name = NAME
    Options = PIIOptions

    def __init__(self, options: PIIOptions) -> None:
        super().__init__(options)
        self.mask = mask_of(options.entities)
        self.on_request_side = options.direction in ("request", "both")
        self.on_response_side = options.direction in ("response", "both")
        self.pseudonymize = options.action == "pseudonymize"
        self.per_conversation = self.pseudonymize and options.scope == "conversation"
        self.vault: PseudonymVault = MemoryPseudonyms()

    async def start(self, resources: PolicyResources) -> None:
        """Conversation pseudonyms use the state backend's vault."""
        self.vault = resources.pseudonyms

    def enabled_hooks(self) -> frozenset[str]:
        hooks = {"on_request"} if self.on_request_side or self.pseudonymize else set()
        if self.on_response_side or self.pseudonymize:
            hooks |= {"on_response", "stream_filter", "tool_args_filter"}
        return frozenset(hooks)

    # -- helpers ----------------------------------------------------------------------

    def _decision(self, ctx: RequestContext) -> Decision:
        decision = ctx.state.get(NAME)
        if not isinstance(decision, Decision):
            decision = Decision(NAME, self.options.action)
            ctx.state[NAME] = decision
            ctx.decisions.append(decision)
        return decision

    def _replacer(self, ctx: RequestContext, where: str) -> Replace:
        action = self.options.action
        template = self.options.placeholder

        def count(kind: int) -> None:
            detail = self._decision(ctx).detail
            key = KINDS[kind]
            detail[key] = detail.get(key, 0) + 1

        if action == "block":

            def block(value: str, kind: int) -> str:
                count(kind)
                raise PolicyViolation(
                    NAME, KINDS[kind].lower(), f"The {where} contains {_label(kind)}."
                )

            return block
        if action == "log":

            def log(value: str, kind: int) -> str:
                count(kind)
                return value

            return log
        if action == "mask":

            def masked(value: str, kind: int) -> str:
                count(kind)
                return mask_value(value, kind)

            return masked
        if action == "pseudonymize":
            names = self._names(ctx)

            def pseudonym(value: str, kind: int) -> str:
                count(kind)
                return names.placeholder(value, kind)

            return pseudonym

        def redact(value: str, kind: int) -> str:
            count(kind)
            return str(template.format(kind=KINDS[kind]))

        return redact

    def _names(self, ctx: RequestContext) -> _Pseudonyms:
        key = NAME + ".pseudonyms"
        names = ctx.state.get(key)
        if not isinstance(names, _Pseudonyms):
            names = ctx.state[key] = _Pseudonyms()
        return names

    # -- hooks ------------------------------------------------------------------------

    async def on_request(self, ctx: RequestContext) -> None:
        """Before the request leaves: every message text is scanned and handled. With
        conversation pseudonyms, the vault first gives every value found its placeholder
        (may raise `StateUnavailable` when the backend fails closed)."""
        if not (self.on_request_side or self.pseudonymize):
            return
        if self.per_conversation:
            await self._load_conversation(ctx)
        replace = self._replacer(ctx, "request")
        if _rewrite_messages(
            ctx.body.get("messages"), lambda t: redact_text(t, self.mask, replace)
        ):
            ctx.mark_body_changed()

    async def _load_conversation(self, ctx: RequestContext) -> None:
        conversation = ctx.headers.get(self.options.conversation_header)
        if not conversation:
            return  # per-request placeholders
        found: dict[tuple[str, str], None] = {}

        def collect(value: str, kind: int) -> str:
            found[(value, KINDS[kind])] = None
            return value

        _rewrite_messages(ctx.body.get("messages"), lambda t: redact_text(t, self.mask, collect))
        table = await self.vault.assign(
            ctx.consumer or "", conversation, self.options.conversation_ttl_s, list(found)
        )
        if table is not None:  # None: the backend failed open, so per request
            self._names(ctx).load(table)

    def on_response(self, ctx: RequestContext, body: dict[str, Any]) -> bool:
        """A whole response: message content and tool-call arguments."""
        if self.pseudonymize:
            names = self._names(ctx)
            return _rewrite_choices(body, names.restore)
        replace = self._replacer(ctx, "response")
        return _rewrite_choices(body, lambda t: redact_text(t, self.mask, replace))

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> Any:
        """Per streamed choice: a redactor with hold-back (or the pseudonym restorer)."""
        if self.pseudonymize:
            return _RestoreFilter(self._names(ctx))
        return StreamRedactor(self.mask, self._replacer(ctx, "response"), self.options.max_hold)

    def tool_args_filter(self, ctx: RequestContext, choice_index: int, call_index: int) -> Any:
        """Per streamed tool call: its argument fragments are handled like text."""
        return self.stream_filter(ctx, choice_index)


def _label(kind: int) -> str:
    name = KINDS[kind]
    for group, members in GROUPS.items():
        if name in members and group == "SECRETS":
            return f"a secret ({name})"
    return f"personal data ({name})"


def _rewrite_text_parts(content: Any, fn: Callable[[str], str]) -> tuple[Any, bool]:
    if isinstance(content, str):
        new = fn(content)
        return new, new != content
    changed = False
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                new = fn(part["text"])
                if new != part["text"]:
                    part["text"] = new
                    changed = True
    return content, changed


def _rewrite_calls(message: dict[str, Any], fn: Callable[[str], str]) -> bool:
    changed = False
    calls = message.get("tool_calls")
    holders = (
        [c.get("function") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    )
    if isinstance(message.get("function_call"), dict):
        holders.append(message["function_call"])
    for holder in holders:
        if isinstance(holder, dict) and isinstance(holder.get("arguments"), str):
            new = fn(holder["arguments"])
            if new != holder["arguments"]:
                holder["arguments"] = new
                changed = True
    return changed


def _rewrite_messages(messages: Any, fn: Callable[[str], str]) -> bool:
    if not isinstance(messages, list):
        return False
    changed = False
    for message in messages:
        if not isinstance(message, dict):
            continue
        content, c1 = _rewrite_text_parts(message.get("content"), fn)
        if c1:
            message["content"] = content
        changed = _rewrite_calls(message, fn) or c1 or changed
    return changed


def _rewrite_choices(body: dict[str, Any], fn: Callable[[str], str]) -> bool:
    choices = body.get("choices")
    if not isinstance(choices, list):
        return False
    messages = [c.get("message") for c in choices if isinstance(c, dict)]
    return _rewrite_messages(messages, fn)
