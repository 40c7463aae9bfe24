"""Response headers: how a call and a refusal are described to clients (SPEC §4).

The service and the core return values (a ``Receipt``, an error with ``retry_after`` and a
``RateInfo``); this module is the one place that turns them into header names and texts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from costwarden.app.service import Receipt
from costwarden.core.decision import RateInfo
from costwarden.errors import CostwardenError


def usd(nanos: int) -> str:
    """An exact decimal string of dollars without exponent or trailing zeros: ``0.000002``."""
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    whole, fraction = divmod(nanos, 1_000_000_000)
    return sign + (f"{whole}.{fraction:09d}".rstrip("0") if fraction else str(whole))


Raw = list[tuple[bytes, bytes]]  # ASGI header pairs


def call_headers(receipt: Receipt, *, anthropic: bool = False) -> Raw:
    """The costwarden and rate-limit headers of a forwarded call, as ASGI header pairs
    (``anthropic``: a call on the Messages API, which also gets Anthropic's rate-limit names)."""
    decision = receipt.decision
    headers = [(b"x-request-id", receipt.id.encode("latin-1")),
               (b"x-costwarden-department", receipt.department.encode("latin-1"))]
    cost = receipt.cost_nanos
    if cost is not None:
        headers.append((b"x-costwarden-cost-usd", usd(cost).encode("latin-1")))
    if decision.remaining_nanos is not None:
        refund = decision.estimate_nanos - (cost if cost is not None else decision.estimate_nanos)
        headers.append((b"x-costwarden-budget-remaining-usd",
                        usd(max(0, decision.remaining_nanos + refund)).encode("latin-1")))
    if decision.downgraded_from:
        headers.append((b"x-costwarden-downgraded-from", decision.downgraded_from.encode("latin-1")))
    if decision.clamped:
        headers.append((b"x-costwarden-max-tokens-clamped", b"%d" % decision.output_tokens))
    if receipt.trimmed_tokens:
        headers.append((b"x-costwarden-context-trimmed", b"%d" % receipt.trimmed_tokens))
    if decision.shadow:
        headers.append((b"x-costwarden-shadow", "; ".join(decision.shadow).encode("latin-1")))
    if decision.rate is not None:
        _add_rate(headers, decision.rate, anthropic)
    return headers


def rate_headers(rate: RateInfo, *, anthropic: bool = False) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits, and with
    ``anthropic`` also Anthropic's ``anthropic-ratelimit-*`` (whose reset is an RFC 3339 instant).

    A reset is when the sliding window is fully restored; OpenAI's is in whole seconds, rounded up.
    Our token limit counts input and output together, so it is Anthropic's combined ``tokens``
    limit; the input- and output-tokens variants are not sent.
    """
    raw: Raw = []
    _add_rate(raw, rate, anthropic)
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}


# The rate-limit header names of each limit: OpenAI's three, then Anthropic's three.
_RATE_NAMES = {kind: (b"x-ratelimit-limit-%s" % kind, b"x-ratelimit-remaining-%s" % kind,
                      b"x-ratelimit-reset-%s" % kind, b"anthropic-ratelimit-%s-limit" % kind,
                      b"anthropic-ratelimit-%s-remaining" % kind, b"anthropic-ratelimit-%s-reset" % kind)
               for kind in (b"requests", b"tokens")}
_REQUESTS, _TOKENS = _RATE_NAMES[b"requests"], _RATE_NAMES[b"tokens"]


def _add_rate(headers: Raw, rate: RateInfo, anthropic: bool) -> None:
    """Append ``rate_headers`` to ``headers`` as ASGI pairs, in order; written as bytes directly,
    since every forwarded call sends them."""
    for names, limit, remaining, reset, reset_at in (
            (_REQUESTS, rate.limit_requests, rate.remaining_requests, rate.reset_requests_s, rate.reset_requests_at),
            (_TOKENS, rate.limit_tokens, rate.remaining_tokens, rate.reset_tokens_s, rate.reset_tokens_at)):
        if limit is None:
            continue
        limit_text, remaining_text = b"%d" % limit, b"%d" % (remaining or 0)  # remaining is set with its limit
        headers += ((names[0], limit_text), (names[1], remaining_text), (names[2], b"%ds" % reset))
        if anthropic:
            headers += ((names[3], limit_text), (names[4], remaining_text),
                        (names[5], rfc3339(reset_at).encode("latin-1")))


@lru_cache(maxsize=64)  # calls in the same second share their resets' texts
def rfc3339(instant: int) -> str:
    """An instant (epoch seconds) as RFC 3339 in UTC: ``2026-12-01T15:49:07Z``."""
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_headers(exc: CostwardenError, *, anthropic: bool = False) -> dict[str, str]:
    """``retry-after``, ``x-should-retry`` and, for a refused call, the call's own headers
    (``anthropic``: an answer on the Messages API)."""
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["retry-after"] = str(exc.retry_after)
    if exc.should_retry is not None:
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    if exc.request_id is not None:
        headers["x-request-id"] = exc.request_id
    if exc.department is not None:
        headers["x-costwarden-department"] = exc.department
    if exc.budget_scope is not None:
        headers["x-costwarden-budget-scope"] = exc.budget_scope
    if exc.rate is not None:
        headers.update(rate_headers(exc.rate, anthropic=anthropic))
    return headers
