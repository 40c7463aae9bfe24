"""Gateway routes: parse, authenticate, attribute, call the service, render.

The proxied paths are raw ASGI handlers rather than Starlette request/response endpoints: a call
through the gateway is mostly plumbing, and Starlette's Request, Headers and Response objects
were a measurable share of it. Errors are still rendered by ``http.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from costwarden import errors
from costwarden.app.auth import attribute
from costwarden.app.runtime import Runtime
from costwarden.app.service import Reply
from costwarden.http.errors import error_response
from costwarden.http.streaming import MeteredStream
from costwarden.providers import ENDPOINTS, Endpoint


class ClientGone(Exception):
    """The client disconnected before its request body arrived: there is no one to answer."""

log = logging.getLogger(__name__)


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name; the first of repeated headers wins (as Starlette's
    ``Headers.get``). ASGI servers hand header names over in lower case already."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


def _too_large(limit: int) -> errors.RequestTooLarge:
    return errors.RequestTooLarge(
        f"The request body is larger than this gateway's limit of {limit // (1024 * 1024)} MB "
        "(--max-body-mb). Send less input or ask the operator to raise the limit.")


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a Starlette request, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body read straight from ASGI ``receive``, refused with 413 as soon as it passes
    ``limit`` bytes (``declared``: the content-length header); ClientGone if the client left."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual case: one message
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidRequest(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(payload, dict):
        raise errors.InvalidRequest("The request body must be a JSON object.")
    return payload


def reply_start(reply: Reply) -> dict[str, Any]:
    """The ``http.response.start`` message of a complete reply (content-length included)."""
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()
           if name != "content-length"]
    if not (reply.status < 200 or reply.status in (204, 304)):
        raw.append((b"content-length", str(len(reply.body)).encode()))
    return {"type": "http.response.start", "status": reply.status, "headers": raw}


class ProxyHandler:
    """The ASGI handler of one proxied endpoint."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.anthropic = endpoint.wire == "anthropic"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime: Runtime = scope["app"].state.runtime
        endpoint = self.endpoint
        headers = header_map(scope["headers"])
        try:
            identity = runtime.keys.authenticate(headers)
            body = await receive_body(receive, headers.get("content-length"), runtime.settings.max_body_bytes)
            payload = parse_json(body)
            endpoint.validate(payload)
            who = attribute(runtime.admission.policy, identity, headers, payload)
            result = await runtime.service.call(endpoint, payload, who, headers)
        except errors.CostwardenError as exc:
            await error_response(exc, anthropic=self.anthropic)(scope, receive, send)
            return
        except ClientGone:
            return
        except Exception:  # the outermost edge: answer in the API's error shape, never a bare 500 page
            log.exception("unexpected failure on %s", endpoint.path)
            failure = errors.CostwardenError("The gateway failed on this request; it was not charged. Retry it.")
            await error_response(failure, anthropic=self.anthropic)(scope, receive, send)
            return
        if isinstance(result, Reply):
            await send(reply_start(result))
            await send({"type": "http.response.body", "body": result.body})
            return
        await MeteredStream(result)(scope, receive, send)


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
    routes = [Route(path, ProxyHandler(endpoint), methods=["POST"]) for path, endpoint in ENDPOINTS.items()]
    routes.append(Route("/v1/models", list_models, methods=["GET"]))
    return routes
