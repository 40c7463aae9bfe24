"""A plan's token-efficiency features applied to one request, before it is estimated and sent.

Thin context runs first (it decides which turns are sent), then prompt caching marks the prefix
of what is left. Both return a new body and leave the client's untouched; a request of no plan,
or of a plan with neither feature, comes back as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.core.kinds import PromptCaching
from costwarden.core.policy import Plan
from costwarden.providers import Endpoint
from costwarden.providers.caching import place_breakpoints, with_cache_key
from costwarden.providers.trimming import thin

# Endpoints whose conversation thin context may trim, and which API's rules it follows.
_TRIMMED = {"/v1/chat/completions": False, "/v1/messages": True}
# OpenAI endpoints that take a prompt_cache_key.
_KEYED = frozenset({"/v1/chat/completions", "/v1/responses"})


@dataclass(frozen=True, slots=True)
class Shaped:
    """The body to estimate and send, and the input tokens thin context removed from it."""

    payload: Mapping[str, Any]
    trimmed_tokens: int = 0


def shape(plan: Plan, endpoint: Endpoint, payload: Mapping[str, Any], *, model: str | None,
          customer: str | None, tokens: int | None = None) -> Shaped:
    """``payload`` as ``plan``'s efficiency features send it. ``model``: the catalog entry's id
    (the estimator's tokenizer and the cacheable minimum); ``tokens``: the payload's estimate,
    when already known; raises ContextLengthExceeded when thin context cannot make it fit."""
    efficiency = plan.efficiency
    trimmed = 0
    thin_context = efficiency.thin_context
    anthropic = _TRIMMED.get(endpoint.path)
    if thin_context is not None and anthropic is not None:
        done = thin(payload, anthropic=anthropic, limit=thin_context.max_input_tokens, plan=plan.name,
                    measure=lambda body: endpoint.estimate(body, model=model).tokens, tokens=tokens)
        payload, trimmed = done.body, done.removed_tokens
    if efficiency.prompt_caching is PromptCaching.AUTO:
        cached: Mapping[str, Any] | None = None
        if endpoint.path == "/v1/messages":
            named = payload.get("model")
            cached = place_breakpoints(payload, model or (named if isinstance(named, str) else ""))
        elif endpoint.path in _KEYED and customer:
            cached = with_cache_key(payload, customer)
        payload = cached if cached is not None else payload
    return Shaped(payload, trimmed)
