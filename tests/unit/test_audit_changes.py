"""Which budgets a new policy changes, as the audit log records them."""

from __future__ import annotations

from datetime import UTC, datetime
from textwrap import dedent

from costwarden.core.audit import Actor, AuditAction, budget_changes, describe_budget, policy_entries
from costwarden.core.policy import Policy
from costwarden.policy import parse_policy

BEFORE = """
version: 1
organization:
  budgets:
    - {limit: 20000, period: monthly, action: reject}
departments:
  HR:
    budgets:
      - {limit: 200, period: monthly, alert_at: [0.8], action: reject}
  ENGINEERING:
    per_key:
      budgets:
        - {limit: 50, period: 1h, action: reject}
  SUPPORT:
    teams:
      DESK:
        budgets: [{limit: 300, period: weekly, action: reject}]
"""

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
ADMIN = Actor("tok_1", "admin")


def policy(text: str) -> Policy:
    return parse_policy(dedent(text))


def test_an_unchanged_policy_changes_no_budget() -> None:
    assert budget_changes(policy(BEFORE), policy(BEFORE + "\n# a comment\n")) == []


def test_changed_added_and_removed_budgets_each_name_scope_index_and_terms() -> None:
    after = (BEFORE.replace("limit: 200, period: monthly, alert_at: [0.8]", "limit: 250, period: monthly, alert_at: [0.8]")
             .replace("      budgets:\n        - {limit: 50, period: 1h, action: reject}\n", "      budgets: []\n")
             .replace("  SUPPORT:\n", "  SUPPORT:\n    per_user:\n      budgets: [{limit: 5, period: daily, action: reject}]\n"))
    changes = budget_changes(policy(BEFORE), policy(after))
    assert [(c.scope, c.department, c.index, c.before, c.after) for c in changes] == [
        ("key:ENGINEERING/*", "ENGINEERING", 0, "$50.00 1h, reject", None),
        ("dept:HR", "HR", 0, "$200.00 monthly, reject, alerts at 0.8", "$250.00 monthly, reject, alerts at 0.8"),
        ("user:SUPPORT/*", "SUPPORT", 0, None, "$5.00 daily, reject"),
    ]


def test_a_policy_swap_is_one_entry_then_one_per_department_touched() -> None:
    after = BEFORE.replace("limit: 20000", "limit: 25000").replace("limit: 300", "limit: 350")
    entries = policy_entries(policy(BEFORE), policy(after), AT, ADMIN, AuditAction.POLICY_RELOADED, 3, 4)
    assert [(e.action, e.department, e.version_before, e.version_after) for e in entries] == [
        (AuditAction.POLICY_RELOADED, None, 3, 4),
        (AuditAction.BUDGETS_CHANGED, None, 3, 4),
        (AuditAction.BUDGETS_CHANGED, "SUPPORT", 3, 4),
    ]
    assert entries[0].detail["budgets_changed"] == 2
    assert entries[2].detail["budgets"] == [
        {"scope": "team:SUPPORT/DESK", "index": 0, "before": "$300.00 weekly, reject",
         "after": "$350.00 weekly, reject"}]


def test_a_token_budget_and_an_unenforced_one_read_as_such() -> None:
    text = BEFORE.replace("action: reject}\n  ENGINEERING", "action: reject}\n      - {limit: 1000000, unit: tokens, period: daily, action: alert, enforce: false}\n  ENGINEERING")
    hr = policy(text).departments["HR"].rules.budgets
    assert describe_budget(hr[1]) == "1,000,000 tokens daily, alert, not enforced"
