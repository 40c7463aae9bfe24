"""JSON text with exact decimals.

Money written into a response (``usage.cost``) must keep its exact digits: ``Decimal`` values are
written as plain JSON numbers without exponent (``0.0000045``), never through a float.
"""

from __future__ import annotations

import json
import secrets
from decimal import Decimal

import orjson


class _Raw:
    """Collects Decimal values and hands the encoder unique placeholder strings for them."""

    def __init__(self) -> None:
        self._nonce = ""  # drawn on the first Decimal: most bodies have none, and it costs a syscall
        self.values: list[str] = []

    @property
    def nonce(self) -> str:
        if not self._nonce:
            self._nonce = secrets.token_hex(8)
        return self._nonce

    def default(self, value: object) -> str:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"{value} is not a JSON number")
            self.values.append(format(value, "f"))
            return f"__cw_exact_{self.nonce}_{len(self.values) - 1}__"
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    def substitute(self, text: bytes) -> bytes:
        for index, digits in enumerate(self.values):
            text = text.replace(f'"__cw_exact_{self.nonce}_{index}__"'.encode(), digits.encode())
        return text


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON; Decimal values are written with their exact digits."""
    try:
        return orjson.dumps(value)  # the usual body: nothing orjson cannot write by itself
    except orjson.JSONEncodeError:
        pass  # a Decimal, an integer beyond 64 bits, a lone surrogate: the slower way below
    raw = _Raw()
    try:
        text = orjson.dumps(value, default=raw.default)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, ValueError):
            raise exc.__cause__ from None
        # orjson refuses integers beyond 64 bits and lone surrogates; the standard library
        # writes both (as ASCII escapes).
        raw = _Raw()
        text = json.dumps(value, default=raw.default, separators=(",", ":")).encode()
    return raw.substitute(text) if raw.values else text


def loads(text: bytes | str) -> object:
    """Parse JSON text; raises ``ValueError`` on malformed input."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits; the standard library does not.
        return json.loads(text)
