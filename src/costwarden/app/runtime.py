"""The running parts of a gateway process, wired by ``bootstrap``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from costwarden.app.auth import KeyDirectory, TokenDirectory
from costwarden.app.metrics import Metrics
from costwarden.app.observer import CallObserver
from costwarden.app.service import GatewayService
from costwarden.app.settings import Settings
from costwarden.engine.admission import Admission
from costwarden.ledger import Ledger
from costwarden.providers import UpstreamPool


@dataclass(slots=True)
class Runtime:
    settings: Settings
    admission: Admission
    ledger: Ledger
    pool: UpstreamPool
    keys: KeyDirectory
    service: GatewayService
    metrics: Metrics
    observer: CallObserver
    tokens: TokenDirectory
    policy_version: int = 0  # the ledger's id of the policy in force
    # Pools replaced by a policy reload: calls still in flight use them, so they close at stop.
    retired_pools: list[UpstreamPool] = field(default_factory=list)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
