"""Server-sent event framing and the shape of a scripted stream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def data_frame(payload: Any) -> bytes:
    """A ``data:``-only event, as OpenAI's chat and completions streams send."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def event_frame(payload: dict[str, Any]) -> bytes:
    """A named event whose name is the payload's ``type``, as Anthropic and the Responses API send."""
    name: str = payload["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


@dataclass(frozen=True, slots=True)
class StreamScript:
    """A stream in three parts: ``head``, then ``token(i)`` for each output token, then ``tail``.

    A stream cut short sends the head and some tokens, never the tail (which carries the usage).
    """

    head: bytes
    token: Callable[[int], bytes]
    tail: bytes


def constant(frame: bytes) -> Callable[[int], bytes]:
    """A token function that sends the same frame for every token."""

    def token(_index: int) -> bytes:
        return frame

    return token
