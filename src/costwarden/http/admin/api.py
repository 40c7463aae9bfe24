"""How an admin operation is declared and served.

An ``Operation`` names its method, path, roles, query model, body model and response model; the
same declaration parses the request, checks the token's role, renders the reply and describes
the operation in the OpenAPI document, so the document cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from costwarden import errors
from costwarden.app.auth import AdminIdentity
from costwarden.app.runtime import Runtime
from costwarden.http.admin.schemas import NoBody
from costwarden.http.bodies import read_body
from costwarden.http.errors import error_response

Q = TypeVar("Q", bound=BaseModel)
B = TypeVar("B", bound=BaseModel)
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class NotFound(errors.CostwardenError):
    status, type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowed(errors.CostwardenError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class Download(BaseModel):
    """A file answer (a CSV): what a handler returns instead of a JSON model when the caller asked
    for a file; the operation lists its media type in ``downloads``."""

    content: str
    media_type: str
    filename: str


@dataclass(frozen=True, slots=True)
class AdminCall(Generic[Q, B]):
    """One authenticated admin request, parsed: what a handler gets."""

    runtime: Runtime
    who: AdminIdentity
    query: Q
    body: B
    path: Mapping[str, str]
    request: Request


@dataclass(frozen=True, slots=True)
class Operation(Generic[Q, B]):
    """One admin endpoint. ``path`` is relative to ``/admin/v1``; ``raw_body`` names the media type
    of a body the handler reads itself (instead of a JSON ``body`` model)."""

    method: str
    path: str
    summary: str
    roles: tuple[str, ...]
    handler: Callable[[AdminCall[Q, B]], Awaitable[BaseModel]]
    query: type[Q]
    body: type[B]
    response: type[BaseModel]
    status: int = 200
    description: str = ""
    raw_body: str | None = None
    downloads: tuple[str, ...] = ()  # media types of the files it may answer (a ``Download``) besides JSON


def routes(operations: Sequence[Operation[Any, Any]]) -> list[BaseRoute]:
    """One route per path, dispatching on the method (others answer 405 in the error shape)."""
    by_path: dict[str, dict[str, Operation[Any, Any]]] = {}
    for op in operations:
        by_path.setdefault(op.path, {})[op.method] = op
    return [Route(path, _dispatcher(methods), methods=ALL_METHODS) for path, methods in by_path.items()]


async def not_found(request: Request) -> Response:
    return admin_error(NotFound(f"No admin endpoint {request.method} {request.url.path}. "
                                "GET /admin/v1/openapi.json lists them."))


def admin_error(exc: errors.CostwardenError) -> Response:
    """The OpenAI error shape; an invalid policy also lists every problem."""
    return error_response(exc)


def _dispatcher(methods: Mapping[str, Operation[Any, Any]]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        op = methods.get("GET" if request.method == "HEAD" else request.method)
        try:
            if op is None:
                raise MethodNotAllowed(f"{request.url.path} answers {', '.join(methods)}, not {request.method}.",
                                       headers={"allow": ", ".join(methods)})
            result = await _serve(op, request)
        except errors.CostwardenError as exc:
            return admin_error(exc)
        if isinstance(result, Download):
            return Response(result.content, status_code=op.status, media_type=result.media_type,
                            headers={"content-disposition": f'attachment; filename="{result.filename}"'})
        return Response(result.model_dump_json(), status_code=op.status, media_type="application/json")

    return dispatch


async def _serve(op: Operation[Any, Any], request: Request) -> BaseModel:
    runtime: Runtime = request.app.state.runtime
    who = runtime.tokens.authenticate(request.headers)
    if who.role not in op.roles:
        raise errors.PermissionDenied(
            f"A {who.role} token may not {op.summary[0].lower()}{op.summary[1:]}: "
            f"this needs the role {' or '.join(op.roles)}.")
    query = parse(op.query, dict(request.query_params), "query parameter")
    body = NoBody()
    if op.body is not NoBody:
        raw = await read_body(request, runtime.settings.max_body_bytes)
        body = parse(op.body, _json(raw), "field")
    return await op.handler(AdminCall(runtime, who, query, body, dict(request.path_params), request))


def parse(model: type[Q], data: object, what: str) -> Q:
    """Validate ``data`` into ``model``; a failure is a 400 naming every bad parameter."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{what} {'.'.join(map(str, e['loc'])) or '(body)'!r}: {e['msg']}" for e in exc.errors()]
        first = exc.errors()[0]["loc"]
        raise errors.InvalidRequest("Bad " + "; ".join(problems) + ".",
                                    param=str(first[0]) if first else None) from None


def _json(raw: bytes) -> object:
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidRequest(f"The request body is not valid JSON: {exc}.") from exc


__all__ = ["AdminCall", "Download", "MethodNotAllowed", "NotFound", "Operation", "admin_error", "not_found", "parse", "routes"]
