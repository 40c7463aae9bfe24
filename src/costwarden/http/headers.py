"""Response headers: how a call and a refusal are described to clients (SPEC §4).

The service and the core return values (a ``Receipt``, an error with ``retry_after`` and a
``RateInfo``); this module is the one place that turns them into header names and texts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from costwarden.app.service import Receipt
from costwarden.core.decision import RateInfo
from costwarden.errors import CostwardenError


def usd(nanos: int) -> str:
    """An exact decimal string of dollars without exponent or trailing zeros: ``0.000002``."""
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    whole, fraction = divmod(nanos, 1_000_000_000)
    return sign + (f"{whole}.{fraction:09d}".rstrip("0") if fraction else str(whole))


def call_headers(receipt: Receipt, *, anthropic: bool = False) -> dict[str, str]:
    """The costwarden and rate-limit headers of a forwarded call (``anthropic``: a call on the
    Messages API, which also gets Anthropic's rate-limit names)."""
    decision = receipt.decision
    headers = {"x-request-id": receipt.id, "x-costwarden-department": receipt.department}
    cost = receipt.cost_nanos
    if cost is not None:
        headers["x-costwarden-cost-usd"] = usd(cost)
    if decision.remaining_nanos is not None:
        refund = decision.estimate_nanos - (cost if cost is not None else decision.estimate_nanos)
        headers["x-costwarden-budget-remaining-usd"] = usd(max(0, decision.remaining_nanos + refund))
    if decision.downgraded_from:
        headers["x-costwarden-downgraded-from"] = decision.downgraded_from
    if decision.clamped:
        headers["x-costwarden-max-tokens-clamped"] = str(decision.output_tokens)
    if receipt.trimmed_tokens:
        headers["x-costwarden-context-trimmed"] = str(receipt.trimmed_tokens)
    if decision.shadow:
        headers["x-costwarden-shadow"] = "; ".join(decision.shadow)
    if decision.rate is not None:
        headers.update(rate_headers(decision.rate, anthropic=anthropic))
    return headers


def rate_headers(rate: RateInfo, *, anthropic: bool = False) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits, and with
    ``anthropic`` also Anthropic's ``anthropic-ratelimit-*`` (whose reset is an RFC 3339 instant).

    A reset is when the sliding window is fully restored; OpenAI's is in whole seconds, rounded up.
    Our token limit counts input and output together, so it is Anthropic's combined ``tokens``
    limit; the input- and output-tokens variants are not sent.
    """
    headers: dict[str, str] = {}
    for kind, limit, remaining, reset, reset_at in (
            ("requests", rate.limit_requests, rate.remaining_requests, rate.reset_requests_s, rate.reset_requests_at),
            ("tokens", rate.limit_tokens, rate.remaining_tokens, rate.reset_tokens_s, rate.reset_tokens_at)):
        if limit is None:
            continue
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        headers[f"x-ratelimit-reset-{kind}"] = f"{reset}s"
        if anthropic:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = rfc3339(reset_at)
    return headers


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
