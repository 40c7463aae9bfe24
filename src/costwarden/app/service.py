"""The gateway service: admission -> forward -> settle -> record, over the ports.

The HTTP edge parses a request and calls ``GatewayService.call``; this module decides nothing
itself (the core does), forwards through the provider adapters, settles the reservation with the
usage the upstream reported, and makes the ledger event durable before the client sees the end
of its response.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import orjson

from costwarden import errors
from costwarden.app.auth import Attribution
from costwarden.core import events
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.core.money import format_usd
from costwarden.engine.admission import Admission, Admitted, Settled
from costwarden.providers import Endpoint, StreamingReply, StreamTap, UpstreamPool, Usage

log = logging.getLogger(__name__)
T = TypeVar("T")
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta")


class UsageLedger(Protocol):
    """The part of the ledger the hot path writes to."""

    def begin(self, call: InflightCall) -> None: ...

    async def record(self, event: UsageEvent) -> None: ...

    async def record_rejection(self, rejection: Rejection) -> None: ...


class Observer(Protocol):
    """Metrics and alerts: told about every event; must never block or fail a call."""

    def on_event(self, event: UsageEvent, settled: Settled | None) -> None: ...

    def on_rejection(self, rejection: Rejection) -> None: ...


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Streaming:
    """A metered stream for the HTTP edge to pump: feed chunks through ``tap``, then ``finish``."""

    status: int
    headers: dict[str, str]
    reply: StreamingReply
    tap: StreamTap
    finish: Callable[[str], Awaitable[None]]
    resources: AsyncExitStack


@dataclass(slots=True)
class _Call:
    """Everything known about one admitted call while it is in flight."""

    id: str
    endpoint: Endpoint
    who: Attribution
    admitted: Admitted
    provider: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    closed: bool = False  # its reservation is settled or released and its event recorded


class GatewayService:
    def __init__(self, admission: Admission, ledger: UsageLedger, pool: UpstreamPool, observer: Observer,
                 clock: Callable[[], datetime]) -> None:
        self.admission = admission
        self.ledger = ledger
        self.pool = pool
        self.observer = observer
        self.clock = clock
        # Call ids need to be unique, not secret: 128 bits from a generator seeded once from the
        # OS, since uuid4() reads the OS random source on every call (about 20 us here).
        self._ids = random.Random(os.urandom(32))

    async def call(self, endpoint: Endpoint, payload: dict[str, Any], who: Attribution,
                   client_headers: Mapping[str, str]) -> Reply | Streaming:
        """Admit, forward and meter one call; raises a CostwardenError for refusals."""
        call_id = f"req_{self._ids.getrandbits(128):032x}"
        policy = self.admission.policy
        model_id = payload["model"]
        spec = policy.catalog.get(model_id)
        if spec is not None:
            _check_wire(endpoint, spec.id, policy.upstreams[spec.provider].type)
        request = CallRequest(who.caller, model_id, endpoint.estimate_input_tokens(payload),
                              endpoint.requested_output_tokens(payload), endpoint.output_multiplier(payload))
        outcome = await self.admission.admit(call_id, request)
        if isinstance(outcome, Decision):
            raise await self._refuse(call_id, endpoint, who, outcome)
        decision = outcome.decision
        assert decision.model is not None
        upstream = policy.upstreams[decision.model.provider]
        call = _Call(call_id, endpoint, who, outcome, upstream.name, endpoint.wants_stream(payload))
        self.ledger.begin(_inflight(call))
        prepared = endpoint.prepare(payload, model=decision.model.id, output_bound=_bound_to_send(request, decision),
                                    stream=call.stream)
        forward = {k: v for k in FORWARDED_HEADERS if (v := client_headers.get(k))}
        if call.stream:
            return await self._guarded(call, self._stream(call, prepared.body, prepared.client_wants_usage, forward))
        return await self._guarded(call, self._unary(call, prepared.body, forward))

    async def _guarded(self, call: _Call, work: Awaitable[T]) -> T:
        """A failure of the gateway itself still frees the call's reservation and records its event."""
        try:
            return await work
        except errors.CostwardenError:
            raise
        except Exception as exc:  # the service's edge: nothing may leak a reservation or lose an event
            log.exception("call %s failed inside the gateway", call.id)
            if not call.closed:
                await self._close(call, None, events.GATEWAY_ERROR, 500)
            raise errors.CostwardenError(
                f"The gateway failed on this call ({call.id}); it was not charged. Retry it.") from exc

    async def _unary(self, call: _Call, body: bytes, forward: dict[str, str]) -> Reply:
        try:
            reply = await self.pool.post(call.provider, call.endpoint.path, body, forward)
        except errors.UpstreamError as exc:
            await self._close(call, None, events.UPSTREAM_UNREACHABLE, exc.status)
            raise
        usage = _usage_of(call.endpoint, reply.body)
        if usage is None and reply.status < 300:
            usage = _estimated(call)  # a 2xx without usage is charged its estimate, never nothing
        event = await self._close(call, usage, events.OK if reply.status < 300 else events.UPSTREAM_ERROR,
                                  reply.status)
        headers = self._headers(call, event)
        headers["content-type"] = reply.headers.get("content-type", "application/json")
        return Reply(reply.status, headers, reply.body)

    async def _stream(self, call: _Call, body: bytes, wants_usage: bool, forward: dict[str, str]) -> Reply | Streaming:
        resources = AsyncExitStack()
        try:
            reply = await resources.enter_async_context(self.pool.stream(call.provider, call.endpoint.path, body, forward))
        except errors.UpstreamError as exc:
            await resources.aclose()
            await self._close(call, None, events.UPSTREAM_UNREACHABLE, exc.status)
            raise
        if reply.status >= 300:
            content = b"".join([chunk async for chunk in reply.chunks])
            await resources.aclose()
            event = await self._close(call, _usage_of(call.endpoint, content), events.UPSTREAM_ERROR, reply.status)
            headers = self._headers(call, event)
            headers["content-type"] = reply.headers.get("content-type", "application/json")
            return Reply(reply.status, headers, content)
        model = call.admitted.decision.model
        assert model is not None

        def usage_extra(usage: Usage) -> Mapping[str, object]:
            cost = model.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens)
            return {"cost": Decimal(format_usd(cost))}

        tap = call.endpoint.stream_tap(client_wants_usage=wants_usage, usage_extra=usage_extra)

        async def finish(status: str) -> None:
            usage = tap.usage
            if status != events.OK or usage is None:
                usage = _partial(call, usage, tap.produced_output_tokens) if status != events.OK else _estimated(call)
            await self._close(call, usage, status, reply.status)

        headers = self._headers(call, None)
        headers["content-type"] = reply.headers.get("content-type", "text/event-stream")
        headers["cache-control"] = "no-cache"
        return Streaming(reply.status, headers, reply, tap, finish, resources)

    async def _close(self, call: _Call, usage: Usage | None, status: str, http_status: int) -> UsageEvent:
        """Settle (or release) the reservation and make the event durable."""
        call.closed = True
        admitted = call.admitted
        settled: Settled | None = None
        if usage is None:
            await self.admission.release(admitted)
        else:
            settled = await self.admission.settle(admitted, usage.input_tokens, usage.output_tokens,
                                                  usage.cached_input_tokens)
        event = _event(call, usage, settled, status, http_status, self.clock())
        await self.ledger.record(event)
        self.observer.on_event(event, settled)
        return event

    async def _refuse(self, call_id: str, endpoint: Endpoint, who: Attribution,
                      decision: Decision) -> errors.CostwardenError:
        assert decision.denial is not None
        exc = decision.denial.exception()
        caller = who.caller
        rejection = Rejection(id=call_id, at=self.clock(), department=caller.department,
                              model_requested=decision.requested, code=exc.code or "", message=exc.message,
                              http_status=exc.status, endpoint=endpoint.path, team=caller.team, key_id=caller.key_id,
                              user=caller.user, tags=who.tags, shadow=decision.shadow)
        await self.ledger.record_rejection(rejection)
        self.observer.on_rejection(rejection)
        exc.headers.update({"x-request-id": call_id, "x-costwarden-department": caller.department})
        return exc

    def _headers(self, call: _Call, event: UsageEvent | None) -> dict[str, str]:
        decision = call.admitted.decision
        headers = {"x-request-id": call.id, "x-costwarden-department": call.who.caller.department}
        if event is not None:
            headers["x-costwarden-cost-usd"] = _usd(event.cost_nanos)
        if decision.remaining_nanos is not None:
            refund = decision.estimate_nanos - (event.cost_nanos if event is not None else decision.estimate_nanos)
            headers["x-costwarden-budget-remaining-usd"] = _usd(max(0, decision.remaining_nanos + refund))
        if decision.downgraded_from:
            headers["x-costwarden-downgraded-from"] = decision.downgraded_from
        if decision.clamped:
            headers["x-costwarden-max-tokens-clamped"] = str(decision.output_tokens)
        if decision.shadow:
            headers["x-costwarden-shadow"] = "; ".join(decision.shadow)
        rate = decision.rate
        if rate is not None:
            for kind, limit, remaining, reset in (
                    ("requests", rate.limit_requests, rate.remaining_requests, rate.reset_requests_s),
                    ("tokens", rate.limit_tokens, rate.remaining_tokens, rate.reset_tokens_s)):
                if limit is not None:
                    headers[f"x-ratelimit-limit-{kind}"] = str(limit)
                    headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
                    headers[f"x-ratelimit-reset-{kind}"] = f"{reset}s"
        return headers


def _usd(nanos: int) -> str:
    """``format_usd`` for the amounts of every response's headers, without a Decimal."""
    if nanos < 0:
        return format_usd(nanos)
    whole, fraction = divmod(nanos, 1_000_000_000)
    return f"{whole}.{fraction:09d}".rstrip("0").rstrip(".") if fraction else str(whole)


def _check_wire(endpoint: Endpoint, model: str, upstream_type: str) -> None:
    if endpoint.wire == "anthropic" and upstream_type != "anthropic":
        raise errors.InvalidRequest(
            f"{model} is served by an OpenAI-compatible upstream; call POST /v1/chat/completions for it.",
            param="model")
    if endpoint.wire == "openai" and upstream_type == "anthropic":
        raise errors.InvalidRequest(
            f"{model} is served by an Anthropic upstream; call POST /v1/messages for it.", param="model")


def _bound_to_send(request: CallRequest, decision: Decision) -> int | None:
    """The output bound to write into the upstream request, when it differs from the client's."""
    if decision.clamped or (request.output_tokens is not None and decision.output_tokens < request.output_tokens):
        return decision.output_tokens
    return None


def _usage_of(endpoint: Endpoint, body: bytes) -> Usage | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return endpoint.usage_from_response(payload) if isinstance(payload, dict) else None


def _estimated(call: _Call) -> Usage:
    request = call.admitted.request
    return Usage(request.input_tokens, 0, call.admitted.decision.output_tokens * request.choices)


def _partial(call: _Call, reported: Usage | None, produced: int) -> Usage:
    """What a stream cut short is charged: its input, and the output it produced."""
    if reported is not None:
        return replace(reported, output_tokens=max(reported.output_tokens, produced))
    return Usage(call.admitted.request.input_tokens, 0, produced)


def _inflight(call: _Call) -> InflightCall:
    admitted, caller = call.admitted, call.who.caller
    decision = admitted.decision
    assert decision.model is not None
    return InflightCall(
        id=call.id, admitted_at=admitted.at, department=caller.department, model_requested=decision.requested,
        model_served=decision.model.id, provider=call.provider, endpoint=call.endpoint.path,
        estimate_input_tokens=admitted.request.input_tokens,
        estimate_output_tokens=decision.output_tokens * admitted.request.choices,
        estimate_nanos=decision.estimate_nanos, price_version=decision.model.price_version, team=caller.team,
        key_id=caller.key_id, user=caller.user, tags=call.who.tags, decision=decision.label, stream=call.stream)


def _event(call: _Call, usage: Usage | None, settled: Settled | None, status: str, http_status: int,
           now: datetime) -> UsageEvent:
    admitted, caller = call.admitted, call.who.caller
    decision = admitted.decision
    assert decision.model is not None
    usage = usage or Usage(0, 0, 0)
    return UsageEvent(
        id=call.id, admitted_at=admitted.at, finished_at=now, department=caller.department,
        model_requested=decision.requested, model_served=decision.model.id, provider=call.provider,
        endpoint=call.endpoint.path, team=caller.team, key_id=caller.key_id, user=caller.user, tags=call.who.tags,
        input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens, cost_nanos=settled.cost_nanos if settled else 0,
        estimate_nanos=decision.estimate_nanos, price_version=decision.model.price_version,
        decision=decision.label, status=status, http_status=http_status,
        latency_ms=int((time.perf_counter() - call.started) * 1000),
        overrun_tokens=settled.overrun_tokens if settled else 0, shadow=decision.shadow, stream=call.stream)
