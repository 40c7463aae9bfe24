"""The mock upstream as a raw ASGI application: routing, auth, delays, streaming, stats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from costwarden.mock_upstream import anthropic_wire, openai_wire, responses_wire
from costwarden.mock_upstream.asgi import (
    SSE_HEADERS,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    run_lifespan,
    send_chunk,
    send_json,
)
from costwarden.mock_upstream.ids import IdMint, Stamp
from costwarden.mock_upstream.plan import Plan, PlanError, make_plan
from costwarden.mock_upstream.prompt_cache import NO_CACHE, AnthropicCache, Clock, OpenAICache
from costwarden.mock_upstream.sse import StreamScript
from costwarden.mock_upstream.stats import Stats
from costwarden.mock_upstream.stored import StoredInput, media_tokens


@dataclass(frozen=True, slots=True)
class Route:
    """A generation endpoint: its kind, its provider and the prefix of its response ids."""

    kind: str
    anthropic: bool
    id_prefix: str


ROUTES = {
    "/v1/chat/completions": Route("chat", False, "chatcmpl-"),
    "/v1/completions": Route("completions", False, "cmpl-"),
    "/v1/embeddings": Route("embeddings", False, "emb-"),
    "/v1/responses": Route("responses", False, "resp_"),
    "/v1/messages": Route("messages", True, "msg_01"),
    "/v1/messages/count_tokens": Route("count_tokens", True, "msg_01"),
}

_MISSING_KEY = {
    False: "You didn't provide an API key. You need to provide your API key in an Authorization "
           "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    True: "x-api-key header is required",
}


def authorized(headers: dict[str, str]) -> bool:
    """Any non-empty ``x-api-key`` or ``Authorization: Bearer`` value is accepted."""
    if headers.get("x-api-key", "").strip():
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


class MockClock:
    """The clock prompt caches expire by: a base clock plus an offset that ``POST /mock/clock``
    moves forward, so a test can let a cache entry expire without waiting."""

    def __init__(self, base: Clock = time.monotonic) -> None:
        self._base = base
        self.offset_s = 0.0

    def __call__(self) -> float:
        return self._base() + self.offset_s

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.offset_s += max(0.0, seconds)


class MockUpstream:
    """An ASGI app imitating the OpenAI and Anthropic APIs with deterministic usage.

    State (stats, prompt caches, stored responses) belongs to the instance. ``media_tokens`` is
    what each image, file or document part adds to the input unless a directive says otherwise.
    """

    def __init__(self, latency_ms: int = 0, *, media_tokens: int = 0, clock: Clock = time.monotonic) -> None:
        self.latency_s = max(0, latency_ms) / 1000
        self.media_tokens = max(0, media_tokens)
        self.clock = MockClock(clock)
        self.stats = Stats()
        self.anthropic_cache = AnthropicCache(self.clock)
        self.openai_cache = OpenAICache(self.clock)
        self.stored = StoredInput()
        self._ids = IdMint()

    def reset(self) -> None:
        """Zero the stats and forget every cache entry and stored response."""
        self.stats.reset()
        self.anthropic_cache.clear()
        self.openai_cache.clear()
        self.stored.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except ClientGone:
                return
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        route = ROUTES.get(path)
        if route is not None:
            if method != "POST":
                await self._error(send, route.anthropic, 405, f"Method {method} not allowed on {path}.")
                return
            await self._generate(route, scope, receive, send)
        elif path == "/v1/models" and method == "GET":
            await self._models(scope, send)
        elif path == "/mock/stats" and method == "GET":
            await send_json(send, 200, self.stats.snapshot(), [])
        elif path == "/mock/reset" and method == "POST":
            self.reset()
            await send_json(send, 200, self.stats.snapshot(), [])
        elif path == "/mock/clock" and method == "POST":
            await self._advance_clock(receive, send)
        else:
            await self._error(send, path.startswith("/v1/messages"), 404, f"Unknown endpoint {method} {path}.")

    async def _advance_clock(self, receive: Receive, send: Send) -> None:
        """``{"advance_s": N}`` moves the caches' clock N seconds forward."""
        try:
            seconds = orjson.loads(await read_body(receive)).get("advance_s")
        except (orjson.JSONDecodeError, AttributeError):
            seconds = None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            await self._error(send, False, 400, 'Send {"advance_s": <seconds, not negative>}.')
            return
        self.clock.advance(seconds)
        await send_json(send, 200, {"offset_s": self.clock.offset_s}, [])

    async def _models(self, scope: Scope, send: Send) -> None:
        headers = header_map(scope)
        anthropic = "anthropic-version" in headers
        if not authorized(headers):
            await self._error(send, anthropic, 401, _MISSING_KEY[anthropic])
            return
        payload = anthropic_wire.models() if anthropic else openai_wire.models()
        await send_json(send, 200, payload, [])

    async def _generate(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await read_body(receive)
        headers = header_map(scope)
        if not authorized(headers):
            await self._error(send, route.anthropic, 401, _MISSING_KEY[route.anthropic])
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            await self._error(send, route.anthropic, 400, f"We could not parse the JSON body of your request: {exc}")
            return
        if not isinstance(body, dict):
            await self._error(send, route.anthropic, 400, "The request body must be a JSON object.")
            return
        try:
            plan = make_plan(body, route.kind, headers)
        except PlanError as exc:
            await self._error(send, route.anthropic, 400, exc.message, exc.param)
            return
        delay = self.latency_s + plan.delay_ms / 1000
        if delay:
            await asyncio.sleep(delay)
        stamp = self._ids.stamp(route.id_prefix)
        if plan.status is not None:
            await self._error(send, route.anthropic, plan.status,
                              f"Mock upstream error {plan.status}, as the request's directive asked.")
            return
        try:
            plan = self._with_memory(plan, body, route.kind, cache_marks=b'"cache_control"' in raw)
        except PlanError as exc:
            await self._error(send, route.anthropic, 400, exc.message, exc.param)
            return
        if route.kind == "responses":
            self.stored.remember(body, stamp.id, plan.input_tokens + plan.output_tokens)
        id_header = _id_header(route, stamp)
        if plan.stream:
            await self._stream(plan, _script(route, plan, stamp, body), [*SSE_HEADERS, id_header], receive, send)
            return
        payload = _render(route, plan, stamp, body)
        if route.kind != "count_tokens":  # counting tokens is free and reports no usage
            self._record(plan, plan.output_tokens, cut=False)
        await send_json(send, 200, payload, [id_header])

    def _with_memory(self, plan: Plan, body: Mapping[str, Any], kind: str, *, cache_marks: bool) -> Plan:
        """The plan with what the instance's state adds: media and stored input, prompt caching.
        ``cache_marks`` says whether the raw body mentions ``cache_control`` at all (a fast test)."""
        directives = plan.directives
        total = plan.input_tokens
        if "input_tokens" not in directives and kind in ("chat", "responses", "messages", "count_tokens"):
            total += media_tokens(body, directives.get("media_tokens", self.media_tokens))
            if kind == "responses":
                total += self.stored.tokens(body, directives.get("stored_tokens"))
        if "cached" in directives or kind == "count_tokens":
            if total == plan.input_tokens:
                return plan
            return replace(plan, input_tokens=total, cached_tokens=min(plan.cached_tokens, total))
        if kind == "messages":
            use = self.anthropic_cache.use(body, plan.model) if cache_marks else NO_CACHE
            if use == NO_CACHE and total == plan.input_tokens:
                return plan  # the usual request: nothing to change
            read = min(use.read, total)
            write_5m = min(use.write_5m, total - read)
            write_1h = min(use.write_1h, total - read - write_5m)
            return replace(plan, input_tokens=total, cached_tokens=read, cache_write_5m=write_5m,
                           cache_write_1h=write_1h)
        if kind in ("chat", "responses"):
            cached = self.openai_cache.use(body, kind, plan.model, total)
            if cached == 0 and total == plan.input_tokens:
                return plan
            return replace(plan, input_tokens=total, cached_tokens=cached)
        return plan

    async def _stream(self, plan: Plan, script: StreamScript, headers: Headers,
                      receive: Receive, send: Send) -> None:
        """Send the script. A ``cut_after`` stream, or one whose client left, ends without its
        tail: returning with the response incomplete makes the server drop the connection."""
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        total = plan.output_tokens
        stop = total if plan.cut_after is None else min(plan.cut_after, total)
        if not plan.chunk_delay_ms:
            # Nothing to pace: one write keeps streaming cheap under load.
            tokens = b"".join(script.token(i) for i in range(stop))
            if plan.cut_after is not None:
                self._record(plan, stop, cut=True)
                await send_chunk(send, script.head + tokens)
                return
            self._record(plan, total, cut=False)
            await send_chunk(send, script.head + tokens + script.tail, more=False)
            return
        gone = asyncio.ensure_future(receive())  # completes with http.disconnect when the client leaves
        try:
            await self._paced(plan, script, stop, gone, send)
        finally:
            gone.cancel()

    async def _paced(self, plan: Plan, script: StreamScript, stop: int,
                     gone: asyncio.Future[Any], send: Send) -> None:
        pause = plan.chunk_delay_ms / 1000
        if script.head:
            await send_chunk(send, script.head)
        sent = 0
        for index in range(stop):
            await asyncio.sleep(pause)
            if gone.done():
                break
            await send_chunk(send, script.token(index))
            sent += 1
        if plan.cut_after is not None or gone.done():
            self._record(plan, sent, cut=True)
            return
        await asyncio.sleep(pause)
        self._record(plan, sent, cut=False)
        await send_chunk(send, script.tail, more=False)

    def _record(self, plan: Plan, sent: int, *, cut: bool) -> None:
        # Recorded before the last bytes leave, so a client that saw the end finds it counted.
        self.stats.record(plan.model, plan.input_tokens, plan.cached_tokens, sent,
                          write_5m=plan.cache_write_5m, write_1h=plan.cache_write_1h, cut=cut)

    async def _error(self, send: Send, anthropic: bool, status: int, message: str,
                     param: str | None = None) -> None:
        self.stats.record_error()
        stamp = self._ids.stamp("")
        if anthropic:
            payload = anthropic_wire.error(status, message, stamp.request_id)
            headers = [(b"request-id", stamp.request_id.encode())]
        else:
            payload = openai_wire.error(status, message, param)
            headers = [(b"x-request-id", stamp.request_id.encode())]
        await send_json(send, status, payload, headers)


def _id_header(route: Route, stamp: Stamp) -> tuple[bytes, bytes]:
    return (b"request-id" if route.anthropic else b"x-request-id", stamp.request_id.encode())


def _render(route: Route, plan: Plan, stamp: Stamp, body: dict[str, Any]) -> dict[str, Any]:
    kind = route.kind
    if kind == "chat":
        return openai_wire.chat_completion(plan, stamp)
    if kind == "completions":
        return openai_wire.completion(plan, stamp)
    if kind == "embeddings":
        return openai_wire.embeddings(plan, body)
    if kind == "responses":
        return responses_wire.response(plan, stamp, body)
    if kind == "messages":
        return anthropic_wire.message(plan, stamp)
    return anthropic_wire.count_tokens(plan)


def _script(route: Route, plan: Plan, stamp: Stamp, body: dict[str, Any]) -> StreamScript:
    kind = route.kind
    if kind == "chat":
        return openai_wire.chat_stream(plan, stamp)
    if kind == "completions":
        return openai_wire.completion_stream(plan, stamp)
    if kind == "responses":
        return responses_wire.stream(plan, stamp, body)
    return anthropic_wire.stream(plan, stamp)


def create_app(latency_ms: int = 0, *, media_tokens: int = 0) -> MockUpstream:
    """A fresh mock upstream ASGI app; ``latency_ms`` delays every generation answer;
    ``media_tokens`` is what each image, file or document part adds to the input."""
    return MockUpstream(latency_ms, media_tokens=media_tokens)
