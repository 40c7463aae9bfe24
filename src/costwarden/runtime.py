"""The running parts of a gateway process, wired by ``bootstrap``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from costwarden.admission import Admission
from costwarden.auth import KeyDirectory, TokenDirectory
from costwarden.ledger import Ledger
from costwarden.metrics import Metrics
from costwarden.observer import CallObserver
from costwarden.providers import UpstreamPool
from costwarden.service import GatewayService
from costwarden.settings import Settings


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
