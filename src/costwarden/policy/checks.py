"""Cross-field checks on the merged catalog: upstreams for providers, downgrade chains, allow-lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from costwarden.core.catalog import Catalog
from costwarden.policy.problems import Problems

# Models the catalog names but the policy cannot use, with the reason to give when something
# refers to them (None: the model's own entry is invalid and was reported already).
Unavailable = Mapping[str, str | None]


def unknown_model(model_id: str, unavailable: Unavailable) -> str | None:
    """The message for a reference to a model that is not in the policy's catalog."""
    if model_id in unavailable:
        return unavailable[model_id]
    return f"unknown model {model_id!r} (not in the bundled catalog or the policy's models)"


def check_providers(providers: Mapping[str, str], policy_ids: Iterable[str], upstreams: Iterable[str],
                    problems: Problems) -> dict[str, str | None]:
    """Report policy models whose provider names no upstream; returns every unserved model.

    Bundled models of a provider the policy does not route (``google`` when upstreams list only
    openai and anthropic) are not errors: they are left out of the policy's catalog.
    """
    known = sorted(upstreams)
    unserved: dict[str, str | None] = {
        model_id: f"model {model_id!r} is served by provider {provider!r}, which has no entry in upstreams"
        for model_id, provider in providers.items() if provider not in known
    }
    for model_id in policy_ids:
        if model_id in unserved:
            problems.add(("models", model_id, "provider"),
                         f"provider {providers[model_id]!r} has no entry in upstreams "
                         f"(upstreams: {', '.join(known) or 'none'})")
    return unserved


def check_downgrades(catalog: Catalog, policy_ids: Sequence[str], unavailable: Unavailable,
                     problems: Problems) -> None:
    """Every ``downgrade_to`` names a usable model of the same kind, and no chain loops."""
    for model_id, spec in catalog.items():
        target = spec.downgrade_to
        if target is None:
            continue
        path = ("models", model_id, "downgrade_to")
        if target not in catalog:
            message = unknown_model(target, unavailable)
            if message:
                problems.add(path, message)
        elif catalog[target].kind != spec.kind:
            problems.add(path, f"{target!r} is of kind {catalog[target].kind}, "
                         f"but {model_id!r} is of kind {spec.kind}")
    reported: set[frozenset[str]] = set()
    for model_id in [*policy_ids, *catalog]:
        cycle = catalog.downgrade_cycle(model_id) if model_id in catalog else None
        if cycle is None or frozenset(cycle) in reported:
            continue
        reported.add(frozenset(cycle))
        members = cycle[:-1]
        start = next((m for m in policy_ids if m in members), members[0])
        at = members.index(start)
        loop = [*members[at:], *members[:at], start]
        problems.add(("models", start, "downgrade_to"), f"downgrade chain loops: {' -> '.join(loop)}")


def check_allow_list(department_id: str, models: Sequence[str], catalog: Catalog,
                     unavailable: Unavailable, problems: Problems) -> None:
    """Every model of a department's allow-list exists in the policy's catalog."""
    for index, model_id in enumerate(models):
        message = None if catalog.resolve(model_id) is not None else unknown_model(model_id, unavailable)
        if message:
            problems.add(("departments", department_id, "models", index), message)
