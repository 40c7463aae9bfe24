"""The running parts of a gateway process, wired by ``bootstrap``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from costwarden.app.auth import KeyDirectory, TokenDirectory
from costwarden.app.generation import Generation
from costwarden.app.metrics import Metrics
from costwarden.app.observer import CallObserver
from costwarden.app.ports import UpstreamClient
from costwarden.app.service import GatewayService
from costwarden.app.settings import Settings
from costwarden.core.policy import Policy
from costwarden.engine.admission import Admission
from costwarden.ledger import Ledger
from costwarden.providers import Endpoint


@dataclass(slots=True)
class Runtime:
    settings: Settings
    admission: Admission
    ledger: Ledger
    keys: KeyDirectory
    service: GatewayService
    metrics: Metrics
    observer: CallObserver
    tokens: TokenDirectory
    generation: Generation  # swapped whole by a reload; each call reads it once
    endpoints: dict[str, Endpoint]  # the proxied endpoints by path
    upstreams_for: Callable[[Policy], UpstreamClient]  # builds the upstream client of a new policy
    # Upstream clients replaced by a reload: calls still in flight use them, so they close at stop.
    retired: list[UpstreamClient] = field(default_factory=list)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refused_versions: set[int] = field(default_factory=set)  # stored policies this process may not adopt

    @property
    def policy(self) -> Policy:
        """The policy in force now (for reads outside a call, such as the admin API)."""
        return self.generation.policy

    @property
    def policy_version(self) -> int:
        """The ledger's id of the policy in force."""
        return self.generation.version
