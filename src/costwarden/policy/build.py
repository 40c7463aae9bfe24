"""Build a core ``Policy`` from policy YAML: parse, validate, cross-check, convert.

Every stage adds to one ``Problems`` list and the policy is refused with all of them. Sections
are validated entry by entry, so a mistake in one department does not hide those of another.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any

from costwarden.core.catalog import Catalog
from costwarden.core.kinds import StoreFailure, Unit, UpstreamType
from costwarden.core.policy import (
    UNATTRIBUTED,
    Attribution,
    Budget,
    Department,
    Policy,
    RateLimits,
    Rules,
    Team,
    TeamAttribution,
    Upstream,
)
from costwarden.errors import PolicyError
from costwarden.policy.catalog_file import bundled_entries, merge_entries, read_entries, to_model_spec
from costwarden.policy.checks import check_allow_list, check_downgrades, check_providers
from costwarden.policy.fields import empty_if_null, scope_id
from costwarden.policy.plans import build_customers, build_plans
from costwarden.policy.problems import Path, Problem, Problems, describe
from costwarden.policy.schema import (
    AlertsSpec,
    AttributionSpec,
    BudgetSpec,
    DepartmentSpec,
    DocumentSpec,
    OrganizationSpec,
    RulesSpec,
    UpstreamSpec,
)
from costwarden.policy.tags import build_tags
from costwarden.policy.yamlnodes import UnreadableFile, YamlSyntaxError, parse_yaml, read_text


def default_upstreams() -> dict[str, Upstream]:
    """The upstreams of a policy without an ``upstreams`` section: each provider's public API."""
    return {
        "openai": Upstream("openai", UpstreamType.OPENAI, "https://api.openai.com/v1", "OPENAI_API_KEY"),
        "anthropic": Upstream("anthropic", UpstreamType.ANTHROPIC, "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        "google": Upstream("google", UpstreamType.OPENAI, "https://generativelanguage.googleapis.com/v1beta/openai",
                           "GEMINI_API_KEY"),
    }


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file; raises PolicyError listing every problem."""
    name = os.fspath(path)
    try:
        text = read_text(path, "policy file")
    except UnreadableFile as exc:
        raise PolicyError([str(exc)], source=name) from None
    return parse_policy(text, source=name)


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Validate policy YAML text; raises PolicyError (named after ``source``) listing every problem."""
    try:
        document = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise PolicyError([f"YAML syntax error: {exc}"], source=source) from exc
    data = document.data
    if data is None:
        raise PolicyError([str(Problem((), "the file is empty; a policy is a mapping with departments, "
                                           "models, upstreams...", 1))], source=source)
    if not isinstance(data, dict):
        raise PolicyError([str(Problem((), f"a policy must be a mapping (got {describe(data)})", 1))],
                          source=source)
    problems = Problems(document.lines)
    for problem in document.problems:
        problems.add(problem.path, problem.message, problem.line)
    policy = _build(data, text, problems)
    if policy is None or problems:
        raise PolicyError(problems.messages(), source=source)
    return policy


def _build(data: dict[str, Any], text: str, problems: Problems) -> Policy | None:
    top = problems.validate(DocumentSpec, data, ())
    upstreams, upstream_names = _upstreams(data.get("upstreams"), problems)
    catalog, unavailable = _catalog(data.get("models"), upstream_names, problems)
    departments: dict[str, Department] = {}
    raw_departments = data.get("departments")
    if isinstance(raw_departments, dict):
        for department_id, value in raw_departments.items():
            department = _department(department_id, value, catalog, unavailable, problems)
            if department is not None:
                departments[department_id] = department
    plans, plan_names = build_plans(data.get("plans"), catalog, unavailable, problems, _rules)
    department_names = set(raw_departments) if isinstance(raw_departments, dict) else set()
    customers = build_customers(data.get("customers"), plans, plan_names, departments, department_names, problems)
    tags = build_tags(data.get("tags"), problems, _rules)
    organization = problems.validate(OrganizationSpec, empty_if_null(data.get("organization")),
                                     ("organization",))
    attribution = problems.validate(AttributionSpec, empty_if_null(data.get("attribution")), ("attribution",))
    alerts = problems.validate(AlertsSpec, empty_if_null(data.get("alerts")), ("alerts",))
    org_rules = _rules(organization) if organization else Rules()
    if top is None or organization is None or attribution is None or alerts is None:
        return None
    if not attribution.require and UNATTRIBUTED not in departments:
        # calls that name no department are charged here, and shown as such in every report
        departments[UNATTRIBUTED] = Department(UNATTRIBUTED, "Unattributed")
    return Policy(
        catalog=catalog,
        departments=departments,
        timezone=top.timezone,
        upstreams=upstreams,
        attribution=Attribution(header=attribution.header, require=attribution.require,
                                team=TeamAttribution(attribution.team)),
        organization=org_rules,
        organization_notify=tuple(organization.notify),
        version=top.version,
        on_store_failure=StoreFailure(top.on_store_failure),
        source=text,
        plans=plans,
        customers=customers,
        tags=tags,
        alerts=alerts.rules(),
    )


def _upstreams(raw: object, problems: Problems) -> tuple[dict[str, Upstream], set[str]]:
    """The configured upstreams, and every name listed (valid or not) for provider checks."""
    if raw is None:
        defaults = default_upstreams()
        return defaults, set(defaults)
    if not isinstance(raw, dict):
        return {}, set()  # reported by DocumentSpec
    upstreams: dict[str, Upstream] = {}
    for name, value in raw.items():
        spec = problems.validate(UpstreamSpec, value, ("upstreams", name))
        if spec is None:
            continue
        timeout = {"timeout_s": spec.timeout_s} if spec.timeout_s is not None else {}
        upstreams[name] = Upstream(name=name, type=UpstreamType(spec.type), base_url=spec.base_url,
                                   api_key_env=spec.api_key_env, tpm=spec.tpm, **timeout)
    return upstreams, set(raw)


def _catalog(raw: object, upstream_names: set[str], problems: Problems) -> tuple[Catalog, dict[str, str | None]]:
    """The bundled catalog merged with the policy's models, less models no upstream serves."""
    overrides = read_entries(raw, ("models",), problems) if isinstance(raw, dict) else {}
    merged = merge_entries(bundled_entries(), overrides, problems)
    policy_ids = [model_id for model_id in overrides if model_id in merged]
    providers = {model_id: entry.provider for model_id, entry in merged.items() if entry.provider}
    unavailable = check_providers(providers, policy_ids, upstream_names, problems)
    if isinstance(raw, dict):
        # Entries that failed validation were reported; references to them need no second message.
        unavailable.update({model_id: None for model_id in raw if model_id not in merged})
    catalog = Catalog({model_id: to_model_spec(model_id, entry)
                       for model_id, entry in merged.items() if model_id not in unavailable})
    check_downgrades(catalog, policy_ids, unavailable, problems)
    return catalog, unavailable


def _allowed(models: list[str], catalog: Catalog) -> frozenset[str]:
    """An allow-list as catalog entry ids: a snapshot, alias or prefixed id allows its entry."""
    return frozenset(spec.id if (spec := catalog.resolve(model)) is not None else model for model in models)


def _department(department_id: str, value: object, catalog: Catalog, unavailable: dict[str, str | None],
                problems: Problems) -> Department | None:
    path: Path = ("departments", department_id)
    try:
        scope_id(department_id)
    except ValueError as exc:
        problems.add(path, str(exc))
    spec = problems.validate(DepartmentSpec, empty_if_null(value), path)
    allow_list = spec.models if spec is not None else _raw_allow_list(value)
    if allow_list is not None:
        check_allow_list(department_id, allow_list, catalog, unavailable, problems)
    if spec is None:
        return None
    teams = {
        team_id: Team(id=team_id, name=team.name or team_id,
                      rules=_rules(team), notify=tuple(team.notify))
        for team_id, team in spec.teams.items()
    }
    return Department(
        id=department_id,
        name=spec.name or department_id,
        rules=_rules(spec),
        tiers=frozenset(spec.tiers),
        models=_allowed(spec.models, catalog) if spec.models is not None else None,
        notify=tuple(spec.notify),
        teams=teams,
        per_key=_rules(spec.per_key) if spec.per_key else Rules(),
        per_user=_rules(spec.per_user) if spec.per_user else Rules(),
        cost_center=spec.cost_center,
        gl_account=spec.gl_account,
        effective_from=date.fromisoformat(spec.effective_from) if spec.effective_from else None,
    )


def _raw_allow_list(value: object) -> list[str] | None:
    """The allow-list of a department that failed validation, so its models are still checked."""
    models = value.get("models") if isinstance(value, dict) else None
    if not isinstance(models, list) or not all(isinstance(item, str) for item in models):
        return None
    return models


def _rules(spec: RulesSpec) -> Rules:
    limits = spec.limits
    return Rules(
        budgets=tuple(_budget(budget) for budget in spec.budgets),
        limits=RateLimits(tpm=limits.tpm, rpm=limits.rpm, enforce=limits.enforce) if limits else None,
    )


def _budget(spec: BudgetSpec) -> Budget:
    return Budget(limit=spec.amount(), period=spec.period, action=spec.action, unit=Unit(spec.unit),
                  alert_at=tuple(sorted(set(spec.alert_at))), enforce=spec.enforce)


__all__ = ["default_upstreams", "load_policy", "parse_policy"]
