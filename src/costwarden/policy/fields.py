"""Field types of the policy schema: each one validates a YAML value and says what is wrong.

Numbers arrive as exact Decimals (see ``yamlnodes``); these validators never accept text for a
number, a float, or a bool for an integer. Their messages become ``path: message (line N)``.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, PlainValidator

from costwarden.core.catalog import TIERS
from costwarden.core.kinds import ActionKind
from costwarden.core.money import Price
from costwarden.core.periods import Period, parse_timezone
from costwarden.core.policy import ALERT, DOWNGRADE, REJECT, RESTRICT, Action
from costwarden.policy.problems import describe

SCOPE_ID = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,63}")
NOTIFY_SCHEMES = ("mailto:", "https://", "http://", "log:")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def number(value: object) -> Decimal:
    """An exact number (YAML int or decimal), as a plain Decimal."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ValueError(f"must be a number (got {describe(value)})")
    return Decimal(value)


def whole(value: object) -> int:
    """A whole number written as a YAML number."""
    amount = number(value)
    if amount != amount.to_integral_value():
        raise ValueError(f"must be a whole number (got {describe(value)})")
    return int(amount)


def _positive_whole(value: object) -> int:
    result = whole(value)
    if result <= 0:
        raise ValueError("must be > 0")
    return result


def _non_negative_whole(value: object) -> int:
    result = whole(value)
    if result < 0:
        raise ValueError("must be >= 0")
    return result


def _positive(value: object) -> Decimal:
    amount = number(value)
    if amount <= 0:
        raise ValueError("must be > 0")
    return amount


def _non_negative(value: object) -> Decimal:
    amount = number(value)
    if amount < 0:
        raise ValueError("must be >= 0")
    return amount


def _fraction(value: object) -> Decimal:
    amount = number(value)
    if not 0 < amount <= 1:
        raise ValueError(f"must be a fraction in (0, 1], like 0.8 for 80% (got {value})")
    return amount


def _price(value: object) -> Decimal:
    amount = number(value)
    Price(amount)  # its ValueError says what is wrong: negative, or finer than 1e-6 per 1M
    return amount


def tier(value: object) -> int:
    """A tier: 1 (cheap), 2 (standard) or 3 (expert)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int) or value not in TIERS:
        shown = value if isinstance(value, Decimal | int) and not isinstance(value, bool) else describe(value)
        raise ValueError(f"unknown tier {shown}: tiers are 1 (cheap), 2 (standard) and 3 (expert)")
    return int(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text (got {describe(value)})")
    return value


def _nonempty_text(value: object) -> str:
    text = _text(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _code(value: object) -> str:
    """Codes such as cost centers may be written as numbers; keep their exact source text."""
    if isinstance(value, Decimal) and not isinstance(value, bool):
        return str(getattr(value, "source", value))
    return _text(value)


def _period(value: object) -> Period:
    return Period.parse(_text(value))


def _timezone(value: object) -> ZoneInfo:
    return parse_timezone(_text(value))


def _action(value: object) -> Action:
    if isinstance(value, str):
        if value in (ALERT, REJECT, DOWNGRADE):
            return Action(ActionKind(value))
        raise ValueError(f"unknown action {value!r}: use alert, reject, downgrade or {{restrict_tiers: [1]}}")
    if isinstance(value, dict) and list(value) == [RESTRICT]:
        tiers = value[RESTRICT]
        if not isinstance(tiers, list) or not tiers:
            raise ValueError("restrict_tiers needs a non-empty list of tiers, like {restrict_tiers: [1]}")
        return Action(RESTRICT, frozenset(tier(item) for item in tiers))
    raise ValueError(
        f"must be alert, reject, downgrade or {{restrict_tiers: [..]}} (got {describe(value)})"
    )


def _notify(value: object) -> str:
    text = _text(value)
    if not text.startswith(NOTIFY_SCHEMES) or (text in NOTIFY_SCHEMES and text != "log:"):
        raise ValueError(f"unknown notify target {text!r}: use mailto:ADDRESS, https://URL, http://URL or log:")
    if text.startswith(("http://", "https://")):
        _check_http_url(text)
    return text


def scope_id(value: object) -> str:
    """A department or team id."""
    text = _text(value)
    if not SCOPE_ID.fullmatch(text):
        raise ValueError(f"bad id {text!r}: ids match [A-Z0-9][A-Z0-9_-]{{0,63}} (e.g. MARKETING, TIER1-DESK)")
    return text


def name(value: object) -> str:
    """A lower-case name: a provider, an upstream, a plan."""
    text = _text(value)
    if not _NAME.fullmatch(text):
        raise ValueError(f"bad name {text!r}: use lower-case letters, digits, '-', '_' or '.'")
    return text


def _env_name(value: object) -> str:
    text = _text(value)
    if not _ENV_NAME.fullmatch(text):
        raise ValueError(f"bad environment variable name {text!r}")
    return text


def _base_url(value: object) -> str:
    text = _text(value)
    _check_http_url(text)
    return text.rstrip("/")


def _check_http_url(text: str) -> None:
    """ValueError unless ``text`` is an http(s) URL an HTTP client can open (a host, a usable port)."""
    if not text.startswith(("http://", "https://")) or not urlsplit(text).hostname or any(c.isspace() for c in text):
        raise ValueError(f"must be an http:// or https:// URL (got {text!r})")
    try:
        port = urlsplit(text).port  # raises on a port out of range or not a number
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"bad port in {text!r}: use a number from 1 to 65535")


def _header(value: object) -> str:
    text = _text(value)
    if not _HEADER.fullmatch(text):
        raise ValueError(f"bad HTTP header name {text!r}")
    return text


def _iso_date(value: object) -> str:
    text = _text(value)
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be a date like 2025-08-07 (got {text!r})") from None
    return text


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {describe(value)})")
    return value


def empty_if_null(value: object) -> object:
    """``HR:`` with nothing under it declares HR with every default."""
    return {} if value is None else value


PositiveWhole = Annotated[int, PlainValidator(_positive_whole)]
NonNegativeWhole = Annotated[int, PlainValidator(_non_negative_whole)]
PositiveAmount = Annotated[Decimal, PlainValidator(_positive)]
NonNegativeAmount = Annotated[Decimal, PlainValidator(_non_negative)]
Fraction = Annotated[Decimal, PlainValidator(_fraction)]
PriceValue = Annotated[Decimal, PlainValidator(_price)]
Tier = Annotated[int, PlainValidator(tier)]
Text = Annotated[str, PlainValidator(_text)]
NonEmptyText = Annotated[str, PlainValidator(_nonempty_text)]
Code = Annotated[str, PlainValidator(_code)]
PeriodField = Annotated[Period, PlainValidator(_period)]
TimezoneField = Annotated[ZoneInfo, PlainValidator(_timezone)]
ActionField = Annotated[Action, PlainValidator(_action)]
NotifyTarget = Annotated[str, PlainValidator(_notify)]
ScopeId = Annotated[str, PlainValidator(scope_id)]
Name = Annotated[str, PlainValidator(name)]
EnvName = Annotated[str, PlainValidator(_env_name)]
BaseUrl = Annotated[str, PlainValidator(_base_url)]
HeaderName = Annotated[str, PlainValidator(_header)]
IsoDate = Annotated[str, PlainValidator(_iso_date)]
Flag = Annotated[bool, PlainValidator(_flag)]
EmptyIfNull = BeforeValidator(empty_if_null)
