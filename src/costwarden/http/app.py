"""The ASGI application factory."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from costwarden.app.bootstrap import running
from costwarden.app.settings import Settings, settings_from_environment
from costwarden.clock import utc_now
from costwarden.core.policy import Policy
from costwarden.http.admin import admin_mount
from costwarden.http.dashboard import dashboard_routes
from costwarden.http.errors import EXCEPTION_HANDLERS
from costwarden.http.gateway import gateway_routes, proxy_handlers
from costwarden.http.health import health_routes

log = logging.getLogger(__name__)
# Container allocations between collections of the youngest generation (Python's default: 700).
# A call allocates a few hundred and frees nearly all of them by reference counting, so at the
# default the collector ran every few calls and traversed the objects of every call in flight.
YOUNG_GC_THRESHOLD = 20_000
# The proxies whose X-Forwarded-* headers are trusted unless FORWARDED_ALLOW_IPS names others
# (uvicorn's default and variable).
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1"


class GatewayApp(Starlette):
    """Starlette, with a POST to a proxied path handed straight to its handler.

    Starlette's middleware and router cost a share of a proxied call's CPU (six coroutine layers
    and two send wrappers); the proxy handlers answer every failure themselves, so they need
    none of it. Everything else (other methods and paths, a mounted root path) goes the usual
    way, and an exception a handler lets out is logged as Starlette's handler does.
    """

    def __init__(self, *, proxied: Mapping[str, ASGIApp], forwarded_allow_ips: str = DEFAULT_FORWARDED_ALLOW_IPS,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._proxied = dict(proxied)
        # uvicorn's rewriting of the client's address and scheme from X-Forwarded-* headers sent
        # by a trusted proxy, for everything but the proxied calls, which read neither: the server
        # runs with it off (``server_options``), since a layer of it cost every call a share.
        self._routed = ProxyHeadersMiddleware(super().__call__, trusted_hosts=forwarded_allow_ips)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self._proxied.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                try:
                    await handler(scope, receive, send)
                except Exception:
                    log.error("unexpected failure on POST %s", scope["path"], exc_info=True)
                    raise
                return
        await self._routed(scope, receive, send)  # type: ignore[arg-type]


def create_app(settings: Settings, policy: Policy | None = None,
               clock: Callable[[], datetime] = utc_now, *, freeze_gc: bool = False) -> Starlette:
    """The gateway app; its runtime (ledger, counters, upstream clients) starts with the lifespan.

    ``freeze_gc``: once started, move everything built so far out of the collector's generations
    (a server process does this; it keeps full collections under load short, for p99 latency),
    and collect the youngest generation less often (see ``YOUNG_GC_THRESHOLD``).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, policy, clock) as runtime:
            app.state.runtime = runtime
            if freeze_gc:
                gc.collect()
                gc.freeze()
                _, older, oldest = gc.get_threshold()
                gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)
            yield

    proxied = proxy_handlers()
    return GatewayApp(proxied=proxied, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS,
                      forwarded_allow_ips=settings.environ.get("FORWARDED_ALLOW_IPS", DEFAULT_FORWARDED_ALLOW_IPS),
                      routes=[*gateway_routes(proxied), *health_routes(), admin_mount(), *dashboard_routes()])


def app_from_environment() -> Starlette:
    """The app of a worker process started by ``costwarden serve --workers N``."""
    return create_app(settings_from_environment(), freeze_gc=True)
