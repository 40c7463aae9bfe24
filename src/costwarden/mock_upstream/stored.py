"""Input the request does not carry: stored responses and conversations, and media parts.

The mock remembers every Responses answer it gave (unless the request said ``store: false``) as
the tokens of its whole context, its input plus its output; a request naming it with
``previous_response_id`` carries that many tokens more. A ``conversation`` (an id, or an object
with one) accumulates the same way: each response in it leaves the conversation's context at that
response's input plus output. An unknown ``previous_response_id`` is refused as the real API does.
The ``stored_tokens`` directive replaces what is remembered (known or not). Each media part
(image, file, document, audio) adds ``media_tokens`` (the directive, or the instance's setting).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from costwarden.mock_upstream.plan import PlanError
from costwarden.mock_upstream.usage import count_media_parts

MAX_REMEMBERED = 100_000  # responses and conversations together; the oldest are forgotten first


class StoredInput:
    """What the mock remembers of earlier Responses answers."""

    def __init__(self) -> None:
        self._contexts: OrderedDict[str, int] = OrderedDict()

    def clear(self) -> None:
        """Forget everything."""
        self._contexts.clear()

    def tokens(self, body: Mapping[str, Any], directed: int | None) -> int:
        """The stored tokens a Responses request pulls in. Raises PlanError for an unknown id."""
        if directed is not None:
            return directed
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            if previous not in self._contexts:
                raise PlanError(f"Previous response with id '{previous}' not found.", param="previous_response_id")
            return self._contexts[previous]
        conversation = conversation_id(body)
        return self._contexts.get(conversation, 0) if conversation else 0

    def remember(self, body: Mapping[str, Any], response_id: str, context_tokens: int) -> None:
        """Keep a finished response's context (and its conversation's) for later requests."""
        if body.get("store") is not False:
            self._keep(response_id, context_tokens)
        conversation = conversation_id(body)
        if conversation:
            self._keep(conversation, context_tokens)

    def _keep(self, key: str, tokens: int) -> None:
        self._contexts[key] = tokens
        self._contexts.move_to_end(key)
        while len(self._contexts) > MAX_REMEMBERED:
            self._contexts.popitem(last=False)


def conversation_id(body: Mapping[str, Any]) -> str:
    """The request's ``conversation`` id, or ``""``."""
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    return conversation if isinstance(conversation, str) else ""


def media_tokens(body: Mapping[str, Any], per_part: int) -> int:
    """Tokens of the media parts in a request's messages, input and system prompt."""
    if per_part == 0:
        return 0
    parts = sum(count_media_parts(body.get(field)) for field in ("messages", "input", "system"))
    return parts * per_part
