"""A readable summary of a validated policy, printed by ``costwarden policy check``."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from costwarden.core.money import format_dollars, format_usd
from costwarden.core.policy import Budget, Department, Plan, Policy, RateLimits, Rules, TeamAttribution

_INDENT = "  "


def summarize(policy: Policy) -> str:
    """Timezone, upstreams, models, the organization and each department with its rules."""
    providers = Counter(spec.provider for spec in policy.catalog.values())
    by_provider = ", ".join(f"{count} {name}" for name, count in sorted(providers.items()))
    attribution = policy.attribution
    lines = [
        f"timezone: {policy.timezone_name}",
        f"attribution: {attribution.header} header, {'required' if attribution.require else 'optional'}"
        + ("; X-Team-ID required where teams have budgets" if attribution.team == TeamAttribution.REQUIRED else ""),
        "upstreams: " + ("; ".join(
            f"{up.name} -> {up.base_url} ({up.type}" + (f", key from {up.api_key_env}" if up.api_key_env else "")
            + (f", {up.tpm:,} tpm)" if up.tpm else ")")
            for up in policy.upstreams.values()) or "none"),
        f"models: {len(policy.catalog)}" + (f" ({by_provider})" if by_provider else ""),
    ]
    org = _rules_lines(policy.organization, 1) + _notify_lines(policy.organization_notify, 1)
    lines += ["organization:", *org] if org else ["organization: no budgets or limits"]
    lines.append(f"departments: {len(policy.departments)}")
    for department in policy.departments.values():
        lines += _department_lines(department)
    if policy.plans:
        lines.append(f"plans: {len(policy.plans)}")
        for plan in policy.plans.values():
            lines += _plan_lines(plan)
    if policy.customers:
        lines.append(f"customers: {len(policy.customers)}")
        lines += [f"{_INDENT}{c.id}: {c.name}, plan {c.plan.name}, department {c.department}"
                  for c in policy.customers.values()]
    if policy.tags:
        lines.append(f"tags: {len(policy.tags)}")
        for name, value in sorted(policy.tags):
            rules = _rules_lines(policy.tags[(name, value)].rules, 2)
            lines += [f"{_INDENT}{name}={value}:", *rules] if rules else [f"{_INDENT}{name}={value}: no budgets or limits"]
    return "\n".join(lines)


def _plan_lines(plan: Plan) -> list[str]:
    """'gold: priority high, prompt caching auto, thin context 32,000 tokens' and its card and rules."""
    efficiency = plan.efficiency
    parts = [f"priority {plan.priority}", f"prompt caching {efficiency.prompt_caching}"]
    if efficiency.thin_context is not None:
        parts.append(f"thin context {efficiency.thin_context.max_input_tokens:,} tokens")
    card = plan.rate_card
    bill = f"markup {card.markup_pct.normalize():f}%"
    if card.models:
        bill = f"own prices for {', '.join(sorted(card.models))}; others {bill}"
    if plan.included_nanos:
        bill += f"; {_dollars(plan.included_nanos)} included"
    lines = [f"{_INDENT}{plan.name}: {', '.join(parts)}, queue up to {plan.queue_s.normalize():f} s",
             f"{_INDENT * 2}rate card: {bill}"]
    return lines + _rules_lines(plan.rules, 2)


def describe_budget(budget: Budget) -> str:
    """'$1,000.00 monthly, alert at 80%, action alert'."""
    amount = f"{budget.limit:,} tokens" if budget.unit == "tokens" else _dollars(budget.limit)
    parts = [f"{amount} {budget.period.describe()}"]
    if budget.alert_at:
        parts.append("alert at " + ", ".join(_percent(fraction) for fraction in budget.alert_at))
    parts.append(f"action {budget.action.describe()}")
    text = ", ".join(parts)
    return text if budget.enforce else f"{text} (not enforced)"


def describe_limits(limits: RateLimits) -> str:
    """'20,000 tpm, 60 rpm'."""
    parts = [f"{value:,} {name}" for name, value in (("tpm", limits.tpm), ("rpm", limits.rpm)) if value]
    text = ", ".join(parts)
    return text if limits.enforce else f"{text} (not enforced)"


def _department_lines(department: Department) -> list[str]:
    title = department.id if department.name == department.id else f"{department.id}: {department.name}"
    lines = [_INDENT + title, f"{_INDENT * 2}tiers: {', '.join(map(str, sorted(department.tiers)))}"]
    if department.models is not None:
        lines.append(f"{_INDENT * 2}models: {', '.join(sorted(department.models)) or 'none'}")
    lines += _rules_lines(department.rules, 2)
    lines += _notify_lines(department.notify, 2)
    for team in department.teams.values():
        name = team.id if team.name == team.id else f"{team.id}: {team.name}"
        lines.append(f"{_INDENT * 2}team {name}")
        lines += _rules_lines(team.rules, 3) + _notify_lines(team.notify, 3)
    for label, rules in (("per key", department.per_key), ("per user", department.per_user)):
        if rules:
            lines.append(f"{_INDENT * 2}{label}:")
            lines += _rules_lines(rules, 3)
    codes = [f"{label} {code}" for label, code in (("cost center", department.cost_center),
                                                     ("GL account", department.gl_account)) if code]
    if codes:
        lines.append(f"{_INDENT * 2}{', '.join(codes)}")
    return lines


def _rules_lines(rules: Rules, depth: int) -> list[str]:
    lines = [f"{_INDENT * depth}budget: {describe_budget(budget)}" for budget in rules.budgets]
    if rules.limits is not None:
        lines.append(f"{_INDENT * depth}limits: {describe_limits(rules.limits)}")
    return lines


def _notify_lines(targets: tuple[str, ...], depth: int) -> list[str]:
    return [f"{_INDENT * depth}notify: {', '.join(targets)}"] if targets else []


def _dollars(nanos: int) -> str:
    # Whole cents read best as '$1,000.00'; finer limits are shown exactly.
    return format_dollars(nanos) if nanos % 10_000_000 == 0 else f"${format_usd(nanos)}"


def _percent(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"
