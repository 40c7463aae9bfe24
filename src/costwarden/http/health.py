"""/healthz (the process runs), /readyz (policy, ledger and counters reachable), /metrics."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from costwarden import errors
from costwarden.app.runtime import Runtime


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    checks = {"policy": runtime is not None, "ledger": False, "counters": False}
    if runtime is not None:
        for name, probe in (("ledger", runtime.ledger.ping), ("counters", runtime.admission.store.ping)):
            try:
                await probe()
                checks[name] = True
            except errors.StorageError:
                checks[name] = False
    ready = all(checks.values())
    body = orjson.dumps({"status": "ready" if ready else "not ready", "checks": checks})
    return Response(body, status_code=200 if ready else 503, media_type="application/json")


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def health_routes() -> list[Route]:
    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
