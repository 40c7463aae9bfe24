"""The admin HTTP API under ``/admin/v1`` (SPEC section 5), described by ``/admin/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from costwarden.http.admin import activity, audit, budgets, credentials, customers, policy, reports, session
from costwarden.http.admin.api import ALL_METHODS, Operation, not_found, routes
from costwarden.http.admin.openapi import openapi_document

PREFIX = "/admin/v1"
OPERATIONS: list[Operation[Any, Any]] = [*budgets.OPERATIONS, *activity.OPERATIONS, *credentials.OPERATIONS,
                                         *policy.OPERATIONS, *session.OPERATIONS, *reports.OPERATIONS,
                                         *audit.OPERATIONS, *customers.OPERATIONS]


def admin_mount() -> Mount:
    """The admin API, to mount in the gateway app (it reads ``app.state.runtime``)."""
    document = orjson.dumps(openapi_document(OPERATIONS, PREFIX))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return Mount(PREFIX, routes=[Route("/openapi.json", openapi, methods=["GET", "HEAD"]), *routes(OPERATIONS),
                                 Route("/{rest:path}", not_found, methods=ALL_METHODS)])


__all__ = ["OPERATIONS", "PREFIX", "admin_mount"]
