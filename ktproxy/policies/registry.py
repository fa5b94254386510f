"""Policy names a config may use, mapped to their classes.

Adding a policy is one module and one line here. Names of policies that are part of
the product but not in this release are listed separately so that lint can say so
instead of calling them unknown.
"""

from __future__ import annotations

from ktproxy.policies.audit_logger import AuditLogger
from ktproxy.policies.base import Policy
from ktproxy.policies.pii_detector import PIIDetector
from ktproxy.policies.prompt_injection import PromptInjection

POLICIES: dict[str, type[Policy]] = {
    PromptInjection.name: PromptInjection,
    PIIDetector.name: PIIDetector,
    AuditLogger.name: AuditLogger,
}

# Part of the product's config format, not yet implemented in this release.
PLANNED: frozenset[str] = frozenset()


def register(cls: type[Policy]) -> type[Policy]:
    """Make `cls` available under `cls.name` (also usable as a class decorator)."""
    POLICIES[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a policy registered at run time (tests use this to clean up)."""
    POLICIES.pop(name, None)
