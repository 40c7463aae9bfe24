"""Which environment variables a policy may send upstream as API keys (SPEC section 10).

An upstream's key is read from the variable its ``api_key_env`` names and sent to its
``base_url``. A policy loaded through the admin API could otherwise name any variable of the
server (its admin token, database URL, SMTP password) and a host of its author's choosing, and
so read the server's secrets. A server therefore keeps an allow-list: ``serve --upstream-env``,
or by default the variables its start-up policy names.
"""

from __future__ import annotations

from collections.abc import Iterable

from costwarden.core.policy import Policy, Upstream
from costwarden.policy.build import default_upstreams


def env_names(policy: Policy) -> frozenset[str]:
    """The variables a policy's upstreams read their keys from (the default allow-list)."""
    return frozenset(up.api_key_env for up in policy.upstreams.values() if up.api_key_env)


def env_problems(policy: Policy, allowed: Iterable[str]) -> list[str]:
    """One sentence per upstream that would send a variable outside ``allowed``; [] if none.

    An upstream equal to a built-in default (each provider's public API with its usual variable)
    is always fine: it sends that provider's key to that provider.
    """
    permitted = frozenset(allowed)
    defaults = default_upstreams()
    problems = []
    for name, upstream in sorted(policy.upstreams.items()):
        variable = upstream.api_key_env
        if variable is None or variable in permitted or _is_default(upstream, defaults):
            continue
        problems.append(
            f"upstreams.{name}.api_key_env: {variable} is not among the variables this server may send "
            f"upstream ({', '.join(sorted(permitted)) or 'none'}); an operator can allow it by starting "
            f"the server with --upstream-env {variable}")
    return problems


def _is_default(upstream: Upstream, defaults: dict[str, Upstream]) -> bool:
    default = defaults.get(upstream.name)
    return default is not None and (default.type, default.base_url, default.api_key_env) == (
        upstream.type, upstream.base_url, upstream.api_key_env)


__all__ = ["env_names", "env_problems"]
