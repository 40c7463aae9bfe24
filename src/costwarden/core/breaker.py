"""A key's breaker: tripped by a ``loop`` or ``anomaly`` rule that says ``trip_breaker``, it
refuses the key's calls until it closes. It is a flag in the counter store with an expiry
(``core.watch.breaker_key``), so every replica sharing the store refuses the key alike."""

from __future__ import annotations

from costwarden import errors
from costwarden.core.denials import Denial
from costwarden.core.scopes import Caller
from costwarden.core.watch import AlertRules, describe_seconds


def breaker_denial(caller: Caller, rules: AlertRules) -> Denial:
    """The refusal of a call whose key's breaker is open (429 ``budget_exceeded``, not retried:
    the SPEC's error for a breaker)."""
    tripping = [rule for rule in (rules.loop, rules.anomaly) if rule is not None and rule.trip_breaker]
    longest = max((rule.breaker_s for rule in tripping), default=0)
    why = " or ".join(["sent the same request again and again"] * (rules.loop in tripping)
                      + ["spent far above its usual rate"] * (rules.anomaly in tripping))
    return Denial(errors.BudgetExceeded,
                  f"Key {caller.key_id} of {caller.department} is stopped by its breaker: it {why} (the alert sent "
                  f"to the department says which). Its calls are refused for up to {describe_seconds(longest)} "
                  "after the breaker tripped; fix the client before it resumes.")
