"""One policy generation: everything a call is decided and forwarded under.

The HTTP edge captures ``runtime.generation`` once per call and hands it down; a reload (here, or
on another replica, picked up from the ledger) builds a new one and swaps it in with one
assignment. A call therefore never sees half of one policy and half of another, whatever awaits
between its admission and its settlement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from costwarden.app.ports import UpstreamClient
from costwarden.core.policy import Policy
from costwarden.core.scopes import Planner


@dataclass(frozen=True, slots=True)
class Generation:
    """A policy, its counter planner, the upstream client built for its upstreams, and the ledger's
    version id of the policy."""

    planner: Planner
    upstreams: UpstreamClient
    version: int

    @property
    def policy(self) -> Policy:
        return self.planner.policy

    @property
    def timezone(self) -> ZoneInfo:
        return self.planner.policy.timezone

    def targets(self, department: str | None) -> tuple[str, ...]:
        """Where alerts about ``department`` (None: the organization) go under this policy."""
        policy = self.planner.policy
        if department is None:
            return policy.organization_notify
        dept = policy.departments.get(department)
        return dept.notify if dept is not None else ()


UpstreamFactory = Callable[[Policy], UpstreamClient]


def generation_of(policy: Policy, version: int, upstreams_for: UpstreamFactory,
                  previous: Generation | None = None) -> Generation:
    """A new generation; it keeps the previous upstream client when the upstreams did not change."""
    if previous is not None and dict(policy.upstreams) == dict(previous.policy.upstreams):
        return Generation(Planner(policy), previous.upstreams, version)
    return Generation(Planner(policy), upstreams_for(policy), version)
