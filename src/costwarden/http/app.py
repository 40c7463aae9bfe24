"""The ASGI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from starlette.applications import Starlette

from costwarden.app.bootstrap import running
from costwarden.app.settings import Settings, settings_from_environment
from costwarden.core.policy import Policy
from costwarden.engine.admission import utc_now
from costwarden.http.admin import admin_mount
from costwarden.http.gateway import gateway_routes
from costwarden.http.health import health_routes


def create_app(settings: Settings, policy: Policy | None = None,
               clock: Callable[[], datetime] = utc_now) -> Starlette:
    """The gateway app; its runtime (ledger, counters, upstream pool) starts with the lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, policy, clock) as runtime:
            app.state.runtime = runtime
            yield

    return Starlette(routes=[*gateway_routes(), *health_routes(), admin_mount()], lifespan=lifespan)


def app_from_environment() -> Starlette:
    """The app of a worker process started by ``costwarden serve --workers N``."""
    return create_app(settings_from_environment())
