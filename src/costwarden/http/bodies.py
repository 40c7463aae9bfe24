"""Request bodies and headers at the edge: size limits, JSON objects, header maps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive

from costwarden import errors
from costwarden.http.errors import ClientGone


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


def _declared_too_large(declared: str | None, limit: int) -> bool:
    return declared is not None and declared.isdigit() and int(declared) > limit


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a Starlette request, refused with 413 as soon as it passes ``limit`` bytes."""
    if _declared_too_large(request.headers.get("content-length"), limit):
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
    if _declared_too_large(declared, limit):
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
    """A JSON object, or 400 saying what is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidRequest(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(payload, dict):
        raise errors.InvalidRequest("The request body must be a JSON object.")
    return payload
