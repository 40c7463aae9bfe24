"""The running parts of a gateway process, wired by ``bootstrap``."""

from __future__ import annotations

from dataclasses import dataclass

from costwarden.admission import Admission
from costwarden.auth import KeyDirectory
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
