"""The ``tags:`` section (SPEC §13): budgets and limits on the calls that carry one tag value,
whatever their department, e.g. ``tags: {project: {atlas: {budgets: [...]}}}``.

Names and values follow the X-Tags grammar, so that every value a policy names is one a call can
carry. Each value is validated on its own, like departments, and every mistake is reported with
its path and line.
"""

from __future__ import annotations

from collections.abc import Callable

from costwarden.core.policy import TAG_TEXT, Rules, TagRules
from costwarden.policy.fields import empty_if_null
from costwarden.policy.problems import Path, Problems, describe
from costwarden.policy.schema import RulesSpec

_GRAMMAR = "letters, digits and _ . : / - only, at most 64 characters, as in X-Tags"


def build_tags(raw: object, problems: Problems,
               rules_of: Callable[[RulesSpec], Rules]) -> dict[tuple[str, str], TagRules]:
    """The tag values with budgets or limits, by (tag name, value)."""
    if not isinstance(raw, dict):
        return {}  # a wrong type is reported by DocumentSpec
    tags: dict[tuple[str, str], TagRules] = {}
    for name, values in raw.items():
        path: Path = ("tags", str(name))
        name_ok = _text_ok(name, "tag name", path, problems)
        values = empty_if_null(values)
        if not isinstance(values, dict):
            problems.add(path, f"must be a mapping of the tag's values to their rules, e.g. "
                               f"{{atlas: {{budgets: [...]}}}} (got {describe(values)})")
            continue
        for value, entry in values.items():
            value_path: Path = (*path, str(value))
            value_ok = _text_ok(value, "tag value", value_path, problems)
            spec = problems.validate(RulesSpec, empty_if_null(entry), value_path)
            if spec is not None and name_ok and value_ok:
                tags[(str(name), str(value))] = TagRules(str(name), str(value), rules_of(spec))
    return tags


def _text_ok(text: object, what: str, path: Path, problems: Problems) -> bool:
    # the YAML reader keeps every mapping key as its source text (2026, true), so any key is text
    if not TAG_TEXT.match(str(text)):
        problems.add(path, f"bad {what} {text!r}: {_GRAMMAR}")
        return False
    return True
