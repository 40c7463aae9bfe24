"""What every endpoint knows: request checks, output bounds, forwarding body, usage parsing.

Each endpoint is one small subclass (``openai.py``, ``anthropic.py``); the gateway looks them up
by path in ``ENDPOINTS`` and never inspects a provider's wire format itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.core.pricing import TokenType
from costwarden.errors import InvalidRequest
from costwarden.providers.jsontext import dumps
from costwarden.providers.taps import StreamTap, UsageExtra
from costwarden.providers.tokens import InputEstimate, InputTally, TokenEstimator
from costwarden.providers.usage import Usage


# Not frozen: every call makes one, and a frozen dataclass sets each field through
# object.__setattr__ (see core/events.py). Never changed once made; nothing hashes one.
@dataclass(slots=True)
class Prepared:
    """The body to forward, and whether the client itself asked for usage in its stream."""

    body: bytes
    client_wants_usage: bool


class Endpoint:
    """One upstream endpoint's wire-format knowledge."""

    path: str = ""
    wire: str = "openai"  # openai | anthropic
    kind: str = "chat"  # chat | embedding
    # Fields a client may bound its output with, and the one written when it gave none.
    output_fields: tuple[str, ...] = ()
    default_output_field: str | None = None
    min_output_bound = 1  # the smallest bound the upstream accepts

    def __init__(self, estimator: TokenEstimator) -> None:
        self.estimator = estimator

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- checks -------------------------------------------------------------------------------

    def validate(self, body: Mapping[str, Any]) -> None:
        """Raise InvalidRequest for a body the upstream would refuse for its shape."""
        if type(body) is not dict and not isinstance(body, Mapping):  # the exact check first: cheaper
            raise InvalidRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            what = "missing" if model is None else "must be a non-empty string"
            raise InvalidRequest(f"model: {what}; name the model to call, e.g. \"model\": \"gpt-4o-mini\".",
                                 param="model")
        for field in self.output_fields:
            positive_int(body, field)
        optional(body, "stream", bool)
        self._validate(body)

    def _validate(self, body: Mapping[str, Any]) -> None:
        """The endpoint's own fields."""

    # -- cost inputs ----------------------------------------------------------------------------

    def estimate(self, body: Mapping[str, Any], *, model: str | None = None) -> InputEstimate:
        """What admission knows of the input before sending (see ``providers.tokens``): an upper
        estimate, a proven lower bound, and what part of it is hidden upstream. ``model`` (the
        catalog entry's id) picks the tokenizer; the body's ``model`` when not given."""
        tally = InputTally()
        self._tally(body, tally)
        if self.wire != "openai":
            return self.estimator.estimate(tally, model=None)  # only OpenAI's tokenizers are known
        named = body.get("model")
        return self.estimator.estimate(tally, model=model or (named if isinstance(named, str) else None))

    def estimate_input_tokens(self, body: Mapping[str, Any]) -> int:
        """The upper estimate of the input the gateway can see (``estimate(body).tokens``)."""
        return self.estimate(body).tokens

    def _tally(self, body: Mapping[str, Any], tally: InputTally) -> None:
        raise NotImplementedError

    def requested_output_tokens(self, body: Mapping[str, Any]) -> int | None:
        """The output bound the client gave, per choice; the largest if it gave several."""
        # A loop, not max() over a comprehension: every call asks, and in CPython 3.11 a
        # comprehension is a frame of its own.
        most = None
        for field in self.output_fields:
            value = body.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and (most is None or value > most):
                most = value
        return most

    def output_multiplier(self, body: Mapping[str, Any]) -> int:
        """How many outputs one call produces (``n`` choices); the worst case is this times the bound."""
        return 1

    def cache_write(self, body: Mapping[str, Any]) -> TokenType | None:
        """The dearest prompt-cache write the request asks for, if any (Anthropic's explicit
        ``cache_control``): its input may be billed at that rate rather than the input rate."""
        return None

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True

    # -- forwarding -----------------------------------------------------------------------------

    def prepare(self, body: Mapping[str, Any], *, model: str, output_bound: int | None,
                stream: bool) -> Prepared:
        """The body to forward: ``model`` served, ``output_bound`` written (per choice), stream set."""
        out = dict(body)
        out["model"] = model
        if output_bound is not None:
            self._bound_output(out, output_bound)
        if stream:
            out["stream"] = True
        elif "stream" in out:
            out["stream"] = False
        wants_usage = self._request_usage(out) if stream else True
        return Prepared(dumps(out), wants_usage)

    def _bound_output(self, out: dict[str, Any], bound: int) -> None:
        used = [field for field in self.output_fields if out.get(field) is not None]
        if not used and self.default_output_field is not None:
            used = [self.default_output_field]
        for field in used:
            out[field] = bound

    def _request_usage(self, out: dict[str, Any]) -> bool:
        """Make a stream report its usage; whether the client had asked for it. By default
        usage is always part of the stream, so the client gets it."""
        return True

    # -- answers --------------------------------------------------------------------------------

    def usage_from_response(self, payload: Mapping[str, Any]) -> Usage | None:
        """The usage a complete (non-streamed) answer reports."""
        raise NotImplementedError

    def stream_tap(self, *, client_wants_usage: bool, usage_extra: UsageExtra) -> StreamTap:
        """A fresh tap for one streamed answer."""
        raise NotImplementedError


# -- field checks shared by the endpoints ----------------------------------------------------------

_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", list: "an array", dict: "an object"}


def type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def optional(body: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    """The field's value, None when absent or null; InvalidRequest when of another type."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise InvalidRequest(f"{field}: must be {type_name(kind)}, not {json_type(value)}.", param=field)
    return value


def required(body: Mapping[str, Any], field: str, kind: type | tuple[type, ...], example: str) -> Any:
    """The field's value; InvalidRequest when missing or of another type."""
    if body.get(field) is None:
        raise InvalidRequest(f"{field}: missing; this endpoint needs it, e.g. {example}.", param=field)
    return optional(body, field, kind)


def positive_int(body: Mapping[str, Any], field: str, *, minimum: int = 1) -> int | None:
    value: int | None = optional(body, field, int)
    if value is not None and value < minimum:
        raise InvalidRequest(f"{field}: must be at least {minimum}, not {value}.", param=field)
    return value


def non_empty_list(body: Mapping[str, Any], field: str, example: str) -> list[Any]:
    value: list[Any] = required(body, field, list, example)
    if not value:
        raise InvalidRequest(f"{field}: must not be empty, e.g. {example}.", param=field)
    return value


def check_messages(messages: list[Any], field: str = "messages") -> None:
    """Each message an object with a string role."""
    for index, message in enumerate(messages):
        if type(message) is dict and type(message.get("role")) is str:
            continue  # the usual case, checked without naming the message
        where = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where}: must be an object, not {json_type(message)}.", param=where)
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(f"{where}.role: missing or not a string.", param=f"{where}.role")


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
