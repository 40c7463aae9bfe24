"""The one place errors become responses: OpenAI's error shape, or Anthropic's on /v1/messages.

Every route and the app's exception handlers go through ``error_response``, so a refusal, a
404 of the router, a body too large and an unexpected failure all answer in the API's shape.
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from costwarden import errors
from costwarden.errors import CostwardenError
from costwarden.http.headers import error_headers

log = logging.getLogger(__name__)

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}


class ClientGone(Exception):
    """The client disconnected: there is no one left to answer."""


def openai_error_body(exc: CostwardenError) -> bytes:
    error: dict[str, object] = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
    if isinstance(exc, errors.PolicyError):
        error["problems"] = exc.problems  # an invalid policy lists every problem with its line
    return orjson.dumps({"error": error})


def anthropic_error_body(exc: CostwardenError) -> bytes:
    kind = _ANTHROPIC_TYPES.get(exc.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": exc.message, "code": exc.code}})


def error_response(exc: CostwardenError, *, anthropic: bool = False) -> Response:
    body = anthropic_error_body(exc) if anthropic else openai_error_body(exc)
    return Response(body, status_code=exc.status, headers=error_headers(exc, anthropic=anthropic),
                    media_type="application/json")


def unexpected(what: str) -> CostwardenError:
    """What a client is told when the gateway itself failed (logged by the caller)."""
    return CostwardenError(f"The gateway failed on {what}; it was not charged. Retry it.")


def _anthropic_path(request: Request) -> bool:
    return request.url.path.startswith("/v1/messages")


class _RouteError(errors.InvalidRequest):
    """A path or method the router does not know, in the API's error shape."""


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: CostwardenError = _RouteError(
            f"{request.method} {request.url.path} does not exist. See /admin/v1/openapi.json for the admin API; "
            "the gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, "
            "/v1/messages and GET /v1/models.", code="not_found")
        error.status = 404
    elif exc.status_code == 405:
        error = _RouteError(f"{request.method} is not allowed on {request.url.path}.", code="method_not_allowed")
        error.status = 405
    else:
        error = _RouteError(str(exc.detail), code="http_error")
        error.status = exc.status_code
    return error_response(error, anthropic=_anthropic_path(request))


async def on_costwarden_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CostwardenError)
    return error_response(exc, anthropic=_anthropic_path(request))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected failure on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(unexpected("this request"), anthropic=_anthropic_path(request))


EXCEPTION_HANDLERS = {HTTPException: on_http_exception, CostwardenError: on_costwarden_error,
                      Exception: on_unexpected}
