"""Minimal ASGI plumbing: types, request body, JSON answers, lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class ClientGone(Exception):
    """The client left before its request body arrived."""


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name (ASGI servers already lower-case them)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body  # the usual case: one message
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(send: Send, status: int, payload: Any, headers: Headers) -> None:
    """A complete JSON answer with a content-length."""
    data = orjson.dumps(payload)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [JSON_TYPE, (b"content-length", str(len(data)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": data})


async def send_chunk(send: Send, data: bytes, *, more: bool = True) -> None:
    """One piece of a streamed body."""
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def run_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown; the app holds no resources."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
