"""Provider kinds a config may name, mapped to the adapter that serves them.

A name maps to an import string so that a config check does not import every
adapter, and adding a provider is one module and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ktproxy.providers.base import Provider

PROVIDERS: dict[str, str] = {
    "openai": "ktproxy.providers.openai:OpenAIProvider",
    "mock": "ktproxy.providers.mock:MockProvider",
    "anthropic": "ktproxy.providers.anthropic:AnthropicProvider",
    "google-vertex": "ktproxy.providers.vertex:VertexProvider",
    "ollama": "ktproxy.providers.ollama:OllamaProvider",
}

# Part of the product's config format, not yet implemented in this release.
PLANNED: frozenset[str] = frozenset()

# Kinds that talk to a network upstream and so need `base_url`.
NETWORKED: frozenset[str] = frozenset({"openai", "anthropic", "google-vertex", "ollama"})


def provider_class(kind: str) -> type[Provider]:
    """Import and return the adapter class for `kind` (which must be in PROVIDERS)."""
    module_name, _, attr = PROVIDERS[kind].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), attr)
    return cls
