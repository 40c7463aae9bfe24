"""The ``plans:`` and ``customers:`` sections (SPEC §12), validated entry by entry.

A plan's rate card may price models the policy's catalog knows (by id, snapshot or alias; kept
by catalog entry id, as usage events record them). A customer names a plan and a department that
must exist; each mistake is reported with its path and line like every other section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal

from costwarden.core.catalog import Catalog
from costwarden.core.kinds import Priority, PromptCaching
from costwarden.core.money import Price
from costwarden.core.policy import Customer, Department, Efficiency, Plan, RateCard, Rules, ThinContext
from costwarden.core.pricing import Prices
from costwarden.policy.checks import Unavailable, unknown_model
from costwarden.policy.fields import empty_if_null, name, scope_id
from costwarden.policy.problems import Path, Problems
from costwarden.policy.schema import CustomerSpec, ModelRateSpec, PlanSpec, RulesSpec


def build_plans(raw: object, catalog: Catalog, unavailable: Unavailable, problems: Problems,
                rules_of: Callable[[RulesSpec], Rules]) -> tuple[dict[str, Plan], set[str]]:
    """The valid plans, and every plan name listed (valid or not) so customers' references to a
    broken plan are not reported twice."""
    if not isinstance(raw, dict):
        return {}, set()  # a wrong type is reported by DocumentSpec
    plans: dict[str, Plan] = {}
    for plan_name, value in raw.items():
        path: Path = ("plans", plan_name)
        try:
            name(plan_name)
        except ValueError as exc:
            problems.add(path, str(exc))
        spec = problems.validate(PlanSpec, empty_if_null(value), path)
        if spec is None:
            continue
        card = _rate_card(spec, catalog, unavailable, problems, path)
        thin = spec.efficiency.thin_context
        plans[plan_name] = Plan(
            name=plan_name,
            priority=Priority(spec.priority),
            efficiency=Efficiency(PromptCaching(spec.efficiency.prompt_caching),
                                  ThinContext(thin.max_input_tokens) if thin is not None else None),
            rate_card=card,
            included_nanos=spec.included_nanos(),
            rules=rules_of(spec),
            queue_s=spec.queue_s,
        )
    return plans, set(raw)


def _rate_card(spec: PlanSpec, catalog: Catalog, unavailable: Unavailable, problems: Problems,
               path: Path) -> RateCard:
    models: dict[str, Prices] = {}
    for model_id, rate in spec.rate_card.models.items():
        entry = catalog.resolve(model_id)
        if entry is None:
            message = unknown_model(model_id, unavailable)
            if message:
                problems.add((*path, "rate_card", "models", model_id), message)
            continue
        if entry.id in models:
            problems.add((*path, "rate_card", "models", model_id),
                         f"{model_id!r} is {entry.id!r}, which this rate card already prices")
            continue
        models[entry.id] = _prices(rate)
    return RateCard(markup_pct=spec.rate_card.markup_pct, models=models)


def _prices(rate: ModelRateSpec) -> Prices:
    def optional(value: Decimal | None) -> Price | None:
        return None if value is None else Price(value)

    return Prices(input=Price(rate.input), output=Price(rate.output), cached_input=optional(rate.cached_input),
                  cache_write_5m=optional(rate.cache_write_5m), cache_write_1h=optional(rate.cache_write_1h))


def build_customers(raw: object, plans: Mapping[str, Plan], plan_names: set[str],
                    departments: Mapping[str, Department], department_names: set[str],
                    problems: Problems) -> dict[str, Customer]:
    """The valid customers; each names a declared plan and department."""
    if not isinstance(raw, dict):
        return {}
    customers: dict[str, Customer] = {}
    for customer_id, value in raw.items():
        path: Path = ("customers", customer_id)
        try:
            scope_id(customer_id)
        except ValueError as exc:
            problems.add(path, str(exc))
        spec = problems.validate(CustomerSpec, empty_if_null(value), path)
        if spec is None:
            continue
        plan = plans.get(spec.plan)
        if plan is None and spec.plan not in plan_names:
            known = ", ".join(sorted(plan_names)) or "none declared under plans"
            problems.add((*path, "plan"), f"unknown plan {spec.plan!r} (plans: {known})")
        department = departments.get(spec.department)
        if department is None and spec.department not in department_names:
            known = ", ".join(sorted(department_names)) or "none"
            problems.add((*path, "department"), f"unknown department {spec.department!r} (departments: {known})")
        if plan is not None and department is not None:
            customers[customer_id] = Customer(customer_id, spec.name or customer_id, plan, department.id)
    return customers


__all__ = ["build_customers", "build_plans"]
