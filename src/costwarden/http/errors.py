"""Render CostwardenError as OpenAI's error shape, or Anthropic's on /v1/messages."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from costwarden.errors import CostwardenError

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}


def openai_error_body(exc: CostwardenError) -> bytes:
    return orjson.dumps({"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}})


def anthropic_error_body(exc: CostwardenError) -> bytes:
    kind = _ANTHROPIC_TYPES.get(exc.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": exc.message, "code": exc.code}})


def error_response(exc: CostwardenError, *, anthropic: bool = False) -> Response:
    body = anthropic_error_body(exc) if anthropic else openai_error_body(exc)
    return Response(body, status_code=exc.status, headers=exc.headers, media_type="application/json")
