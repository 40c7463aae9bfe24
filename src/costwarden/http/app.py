"""The ASGI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from starlette.applications import Starlette

from costwarden.app.bootstrap import running
from costwarden.app.settings import Settings, settings_from_environment
from costwarden.clock import utc_now
from costwarden.core.policy import Policy
from costwarden.http.admin import admin_mount
from costwarden.http.dashboard import dashboard_routes
from costwarden.http.errors import EXCEPTION_HANDLERS
from costwarden.http.gateway import gateway_routes
from costwarden.http.health import health_routes


def create_app(settings: Settings, policy: Policy | None = None,
               clock: Callable[[], datetime] = utc_now, *, freeze_gc: bool = False) -> Starlette:
    """The gateway app; its runtime (ledger, counters, upstream clients) starts with the lifespan.

    ``freeze_gc``: once started, move everything built so far out of the collector's generations
    (a server process does this; it keeps full collections under load short, for p99 latency).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, policy, clock) as runtime:
            app.state.runtime = runtime
            if freeze_gc:
                gc.collect()
                gc.freeze()
            yield

    return Starlette(routes=[*gateway_routes(), *health_routes(), admin_mount(), *dashboard_routes()],
                     lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)


def app_from_environment() -> Starlette:
    """The app of a worker process started by ``costwarden serve --workers N``."""
    return create_app(settings_from_environment(), freeze_gc=True)
