"""Policy files: YAML loading and validation with paths and line numbers (SPEC section 2).

``load_policy`` / ``parse_policy`` return a validated ``costwarden.core.policy.Policy`` or raise
``costwarden.errors.PolicyError`` listing every problem as ``<path>: <message> (line N)``.
"""

from __future__ import annotations

from costwarden.policy.build import default_upstreams, load_policy, parse_policy
from costwarden.policy.catalog_file import bundled_catalog
from costwarden.policy.environment import env_names, env_problems
from costwarden.policy.summary import describe_budget, describe_limits, summarize

__all__ = [
    "bundled_catalog",
    "default_upstreams",
    "describe_budget",
    "describe_limits",
    "env_names",
    "env_problems",
    "load_policy",
    "parse_policy",
    "summarize",
]
