"""Gateway routes: parse, authenticate, attribute, call the service, render."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from costwarden import errors
from costwarden.auth import attribute
from costwarden.http.errors import error_response
from costwarden.http.streaming import MeteredStream
from costwarden.providers import ENDPOINTS, Endpoint
from costwarden.runtime import Runtime
from costwarden.service import Reply


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = errors.RequestTooLarge(
        f"The request body is larger than this gateway's limit of {limit // (1024 * 1024)} MB "
        "(--max-body-mb). Send less input or ask the operator to raise the limit.")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidRequest(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(payload, dict):
        raise errors.InvalidRequest("The request body must be a JSON object.")
    return payload


def _proxy(endpoint: Endpoint) -> Any:
    anthropic = endpoint.wire == "anthropic"

    async def handle(request: Request) -> Response | MeteredStream:
        runtime: Runtime = request.app.state.runtime
        try:
            identity = runtime.keys.authenticate(request.headers)
            payload = parse_json(await read_body(request, runtime.settings.max_body_bytes))
            endpoint.validate(payload)
            who = attribute(runtime.admission.policy, identity, request.headers, payload)
            result = await runtime.service.call(endpoint, payload, who, request.headers)
        except errors.CostwardenError as exc:
            return error_response(exc, anthropic=anthropic)
        if isinstance(result, Reply):
            return Response(result.body, status_code=result.status, headers=result.headers)
        return MeteredStream(result)

    return handle


async def list_models(request: Request) -> Response:
    """GET /v1/models: only what the caller's department may use (Anthropic shape on request)."""
    runtime: Runtime = request.app.state.runtime
    anthropic = "anthropic-version" in request.headers
    try:
        identity = runtime.keys.authenticate(request.headers)
        who = attribute(runtime.admission.policy, identity, request.headers, {})
    except errors.CostwardenError as exc:
        return error_response(exc, anthropic=anthropic)
    policy = runtime.admission.policy
    dept = policy.departments[who.caller.department]
    models = [m for m in policy.catalog.values() if dept.may_use(m.id, m.tier)]
    if anthropic:
        data: list[dict[str, Any]] = [{"type": "model", "id": m.id, "display_name": m.id,
                                       "created_at": "2024-01-01T00:00:00Z"} for m in models]
        body = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
    else:
        body = {"object": "list", "data": [{"id": m.id, "object": "model", "created": 0, "owned_by": m.provider,
                                            "tier": m.tier} for m in models]}
    return Response(orjson.dumps(body), media_type="application/json")


def gateway_routes() -> list[Route]:
    routes = [Route(path, _proxy(endpoint), methods=["POST"]) for path, endpoint in ENDPOINTS.items()]
    routes.append(Route("/v1/models", list_models, methods=["GET"]))
    return routes
