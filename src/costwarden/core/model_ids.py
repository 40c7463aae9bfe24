"""How providers name the versions of a model, so that a dated id finds its catalog entry.

OpenAI dates its snapshots ``gpt-4o-2024-08-06``; Anthropic ``claude-3-5-haiku-20241022``, with a
moving ``claude-3-5-haiku-latest`` alias (and ``claude-sonnet-4-5@20250929`` on Vertex AI);
Google numbers stable versions ``gemini-2.0-flash-001``. Clients (SDKs, LangChain, LiteLLM) also
prefix ids with a provider, ``openai/gpt-4o`` or ``gemini/gemini-2.5-pro``.

A snapshot whose prices differ from its model's (``gpt-4o-2024-05-13``) must be a catalog entry
of its own: an exact id always wins over these rules.
"""

from __future__ import annotations

import re

# Suffixes each provider appends to a model id for a snapshot or an alias of it.
NAMING_RULES: dict[str, tuple[re.Pattern[str], ...]] = {
    "openai": (re.compile(r"-\d{4}-\d{2}-\d{2}$"),),
    "anthropic": (re.compile(r"-\d{8}$"), re.compile(r"@\d{8}$"), re.compile(r"-latest$")),
    "google": (re.compile(r"-\d{3}$"), re.compile(r"-latest$")),
}

# Client-side prefixes that name a provider by another name than the catalog's.
PREFIX_PROVIDERS = {"gemini": "google"}


def base_ids(model_id: str) -> list[tuple[str, str]]:
    """Each id ``model_id`` may be a snapshot or alias of, with the provider whose rule says so."""
    found: list[tuple[str, str]] = []
    for provider, rules in NAMING_RULES.items():
        for rule in rules:
            base = rule.sub("", model_id)
            if base != model_id and base:
                found.append((base, provider))
    return found


def follows_rule(rule_provider: str, provider: str) -> bool:
    """Whether a snapshot named by ``rule_provider``'s rule may belong to a model of ``provider``:
    the bundled providers keep to their own rule; providers a policy adds may use any."""
    return rule_provider == provider or provider not in NAMING_RULES


def split_prefix(model_id: str) -> tuple[str, str] | None:
    """``("openai", "gpt-4o")`` for ``openai/gpt-4o``; None when the id has no prefix."""
    prefix, slash, rest = model_id.partition("/")
    if not slash or not prefix or not rest:
        return None
    return PREFIX_PROVIDERS.get(prefix, prefix), rest


def is_snapshot_of(model_id: str, base: str, provider: str) -> bool:
    """Whether ``model_id`` is ``base`` with a snapshot or alias suffix of ``provider``'s rule."""
    return any(found == base and follows_rule(rule, provider) for found, rule in base_ids(model_id))


__all__ = ["NAMING_RULES", "PREFIX_PROVIDERS", "base_ids", "follows_rule", "is_snapshot_of", "split_prefix"]
