"""Thin context (SPEC §12, ``thin_context: {max_input_tokens: N}``): drop the oldest turns.

When a chat or Messages request's input (the gateway's upper estimate) exceeds the plan's
``max_input_tokens``, the shortest run of the oldest turns whose removal makes it fit is dropped.
Nothing is summarised or rewritten, and what is left is still a valid request:

- the conversation may only be cut just before a user turn, so it still starts with a user turn
  and keeps its alternation (Anthropic), and a tool result never loses the call it answers: an
  assistant ``tool_use``/``tool_calls`` message and its ``tool_result``/``tool`` messages are
  dropped or kept together, since neither API lets a user turn come between them;
- an Anthropic user turn that carries ``tool_result`` blocks is not a cut point (it answers the
  assistant turn before it);
- the system prompt (Anthropic's ``system``; OpenAI ``system``/``developer`` messages wherever
  they are) and the last user turn are never dropped.

A request that cannot fit even with every droppable turn gone raises ``ContextLengthExceeded``
naming the plan. Tokens removed are measured with the same estimator the check uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.errors import ContextLengthExceeded

Measure = Callable[[Mapping[str, Any]], int]
_KEPT_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True, slots=True)
class Trimmed:
    """A request after thin context: the body to send and the input tokens it no longer has."""

    body: Mapping[str, Any]
    removed_tokens: int


def thin(body: Mapping[str, Any], *, anthropic: bool, limit: int, plan: str, measure: Measure,
         tokens: int | None = None) -> Trimmed:
    """``body`` with the fewest oldest turns dropped for its input to be at most ``limit`` tokens
    by ``measure`` (the endpoint's estimate; ``tokens``: its value for ``body``, if known)."""
    total = measure(body) if tokens is None else tokens
    if total <= limit:
        return Trimmed(body, 0)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _too_long(total, limit, plan)
    droppable = [i for i, m in enumerate(messages) if not _kept(m, anthropic)]
    cuts = [n for n, i in enumerate(droppable) if n > 0 and _cut_point(messages[i], anthropic)]
    last_user = max((n for n, i in enumerate(droppable) if _role(messages[i]) == "user"), default=-1)
    cuts = [n for n in cuts if n <= last_user]
    if not cuts:
        raise _too_long(total, limit, plan)
    costs = _costs(body, messages, droppable, measure)
    dropped_cost = 0
    start = 0
    for cut in cuts:  # the earliest cut that fits drops the fewest turns
        dropped_cost += sum(costs[start:cut])
        start = cut
        if total - dropped_cost <= limit:
            kept = _without(body, messages, set(droppable[:cut]))
            remaining = measure(kept)
            if remaining <= limit:
                return Trimmed(kept, total - remaining)
    kept = _without(body, messages, set(droppable[:cuts[-1]]))
    raise _too_long(measure(kept), limit, plan, trimmed=True)


def _costs(body: Mapping[str, Any], messages: list[Any], droppable: list[int], measure: Measure) -> list[int]:
    """Each droppable message's share of the estimate (the estimate is a sum over messages)."""
    base = measure({**body, "messages": []})
    return [measure({**body, "messages": [messages[i]]}) - base for i in droppable]


def _without(body: Mapping[str, Any], messages: list[Any], dropped: set[int]) -> dict[str, Any]:
    return {**body, "messages": [m for i, m in enumerate(messages) if i not in dropped]}


def _role(message: Any) -> object:
    return message.get("role") if isinstance(message, dict) else None


def _kept(message: Any, anthropic: bool) -> bool:
    """A message that is never dropped: OpenAI's system and developer messages."""
    return not anthropic and _role(message) in _KEPT_ROLES


def _cut_point(message: Any, anthropic: bool) -> bool:
    """Whether the conversation may start at ``message``: a user turn that answers no tool call."""
    if _role(message) != "user":
        return False
    content = message.get("content")
    if anthropic and isinstance(content, list):
        return not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    return True


def _too_long(tokens: int, limit: int, plan: str, *, trimmed: bool = False) -> ContextLengthExceeded:
    how = "even with every earlier turn dropped" if trimmed else "and no earlier turn can be dropped"
    return ContextLengthExceeded(
        f"The input is about {tokens} tokens {how}; plan {plan!r} allows at most {limit} input tokens "
        f"(thin_context.max_input_tokens). Shorten the system prompt or the last user turn.", param="messages")
