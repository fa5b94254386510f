"""The kinds of sensitive values the scanner finds, and their bit masks.

The numbering is shared by the C extension and the pure-Python reference: a match
is `(start, end, kind)` with `kind` an index into `KINDS`, and a selection of kinds
is a bit mask (`1 << kind`).
"""

from __future__ import annotations

from collections.abc import Iterable

KINDS: tuple[str, ...] = (
    "EMAIL",
    "PHONE",
    "SSN",
    "CREDIT_CARD",
    "IPV4",
    "IPV6",
    "IBAN",
    "OPENAI_KEY",
    "ANTHROPIC_KEY",
    "AWS_ACCESS_KEY",
    "GITHUB_TOKEN",
    "GITLAB_TOKEN",
    "SLACK_TOKEN",
    "JWT",
    "PRIVATE_KEY",
)

KIND_INDEX: dict[str, int] = {name: i for i, name in enumerate(KINDS)}

ALL_KINDS: int = (1 << len(KINDS)) - 1

# Config-level groups: `entities: [SECRETS]` selects every provider secret.
# Provider secrets are the kinds from OPENAI_KEY on (the numbering keeps them last).
GROUPS: dict[str, tuple[str, ...]] = {
    "SECRETS": KINDS[KIND_INDEX["OPENAI_KEY"] :],
    "IP_ADDRESS": ("IPV4", "IPV6"),
}


def mask_of(names: Iterable[str]) -> int:
    """Bit mask of kind (or group) names; unknown names raise KeyError."""
    mask = 0
    for name in names:
        for kind in GROUPS.get(name, (name,)):
            mask |= 1 << KIND_INDEX[kind]
    return mask
