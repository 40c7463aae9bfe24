"""/healthz (the process runs), /readyz (policy, ledger and counters reachable), /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from costwarden import errors
from costwarden.app.runtime import Runtime
from costwarden.engine.status import budget_status

READY_S = 2.0


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    checks = {"policy": runtime is not None, "ledger": False, "counters": False}
    if runtime is not None:
        # False while new calls would be refused; both asked at once, each given READY_S
        checks["ledger"], checks["counters"] = await asyncio.gather(
            _within(runtime.ledger.ready()), _within(_counters_reachable(runtime)))
    ready = all(checks.values())
    body = orjson.dumps({"status": "ready" if ready else "not ready", "checks": checks})
    return Response(body, status_code=200 if ready else 503, media_type="application/json")


async def _counters_reachable(runtime: Runtime) -> bool:
    try:
        await runtime.admission.store.ping()
    except errors.StorageError:
        return False
    return True


async def _within(check: Awaitable[bool]) -> bool:
    """A store that does not answer within READY_S (a hung Redis or database: no error, no reply)
    is unreachable: a probe gets its 503 at once rather than after the client's own retries."""
    try:
        return await asyncio.wait_for(check, READY_S)
    except TimeoutError:
        return False


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    await _budget_gauges(runtime)
    return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _budget_gauges(runtime: Runtime) -> None:
    """Per-budget gauges from one counter snapshot, as budget status reads it: computed per scrape,
    never on the call path."""
    try:
        statuses = await budget_status(runtime.policy, runtime.admission.store.snapshot, runtime.admission.clock())
    except errors.StorageError:
        runtime.metrics.clear_budgets()
        return
    runtime.metrics.set_budgets(statuses)


def health_routes() -> list[Route]:
    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
