"""The gateway service: admission -> forward -> settle and record, over the ports.

The HTTP edge parses a request and calls ``GatewayService.call``; this module decides nothing
itself (the core does), forwards through the provider adapters, settles the reservation with the
usage the upstream reported, and makes the ledger event durable before the client sees the end
of its response.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import orjson

from costwarden import errors
from costwarden.app.auth import Attribution
from costwarden.app.capacity import DEFAULT_QUEUE_S, CapacityQueue, window_for
from costwarden.app.efficiency import shape
from costwarden.app.generation import Generation
from costwarden.app.ports import Observer, UsageLedger
from costwarden.app.preparation import Preparation
from costwarden.core.catalog import ModelSpec, Resolution
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.core.kinds import CallStatus, Priority, UpstreamType
from costwarden.core.money import format_usd
from costwarden.core.notifications import exhausted_notification, restriction_notification
from costwarden.core.policy import Plan, Policy
from costwarden.core.pricing import ServiceTier, TokenType, service_tier_of
from costwarden.engine.admission import Admission, Admitted, Billed, Settled
from costwarden.providers import Endpoint, Prepared, StreamingReply, StreamTap, Usage

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class Receipt:
    """What the HTTP edge needs to describe a call in its response headers."""

    id: str
    department: str
    decision: Decision
    cost_nanos: int | None  # None while a stream's cost is not known yet
    trimmed_tokens: int = 0  # input tokens thin context removed


@dataclass(slots=True)
class Answer:
    """A complete answer to pass to the client."""

    status: int
    content_type: str
    body: bytes
    receipt: Receipt


@dataclass(slots=True)
class Streaming:
    """A metered stream for the HTTP edge to pump: feed chunks through ``tap``, then ``finish``."""

    status: int
    content_type: str
    receipt: Receipt
    reply: StreamingReply
    tap: StreamTap
    finish: Callable[[CallStatus], Awaitable[None]]
    resources: AsyncExitStack


@dataclass(slots=True)
class _Call:
    """Everything known about one admitted call while it is in flight."""

    id: str
    endpoint: Endpoint
    who: Attribution
    admitted: Admitted
    generation: Generation
    provider: str
    stream: bool
    sent: str  # the model id as the client sent it
    label: str  # the decision's label (allow, clamp, downgrade)
    resolution: Resolution | None  # what the model id sent resolved to in the catalog
    trimmed: int = 0  # input tokens thin context removed (SPEC §12)
    started: float = field(default_factory=time.perf_counter)
    closed: bool = False  # its reservation is settled or released and its event recorded
    ready: Callable[[Answer], None] | None = None  # told a complete answer before its event is durable


@dataclass(slots=True)
class _Closing:
    """A call's event handed to the ledger, and what settling its reservation gave."""

    event: UsageEvent
    settled: Settled | None
    durable: Awaitable[None]  # completes once the event is durable; must be awaited


def new_call_id(random_bits: random.Random) -> str:
    """``req_`` and 32 hex digits: the milliseconds since the epoch (12), then 80 random bits.
    Ids in time order make the ledger's primary-key indexes (events, write-ahead rows) grow at
    their end: random ones changed a page of them per row, more than half of the SQLite ledger's
    WAL frames at concurrency 64."""
    return f"req_{time.time_ns() // 1_000_000:012x}{random_bits.getrandbits(80):020x}"


class GatewayService:
    """Admits, forwards and meters calls; holds no policy (each call brings its ``Generation``)."""

    def __init__(self, admission: Admission, ledger: UsageLedger, observer: Observer,
                 clock: Callable[[], datetime], capacity: CapacityQueue | None = None, *,
                 prepare_while_reserving: bool = False) -> None:
        """``prepare_while_reserving``: a reservation waits for a server (shared counters), and
        a call prepares its forwarding meanwhile (``preparation.py``)."""
        self.admission = admission
        self.prepare_while_reserving = prepare_while_reserving
        self.capacity = capacity or CapacityQueue(window_for(admission.store))
        self.ledger = ledger
        self.observer = observer
        self.clock = clock
        # Call ids need to be unique, not secret: 80 bits from a generator seeded once from the
        # OS (uuid4() reads the OS random source on every call, about 20 us here), behind the
        # milliseconds since the epoch (``new_call_id``).
        self._ids = random.Random(os.urandom(32))

    async def call(self, generation: Generation, endpoint: Endpoint, payload: dict[str, Any], who: Attribution,
                   client_headers: Mapping[str, str],
                   ready: Callable[[Answer], None] | None = None) -> Answer | Streaming:
        """Admit, forward and meter one call under ``generation``; raises a CostwardenError for
        refusals. ``client_headers``: the upstream client forwards the ones its upstream takes.
        ``ready``: told a complete answer from a loop callback while its event is being committed
        (the HTTP edge renders its response meanwhile; it may not be told before the answer is
        returned, if the event was durable at once); the answer is returned once the event is
        durable."""
        call_id = f"req_{self._ids.getrandbits(128):032x}"
        policy = generation.policy
        self.observer.on_request(who.caller, payload, generation, policy.alerts.loop)
        model_id = payload["model"]
        # A snapshot, alias or prefixed id is admitted, priced and recorded as its catalog entry.
        resolution = policy.catalog.resolution(model_id) if isinstance(model_id, str) else None
        spec = resolution.spec if resolution is not None else None
        model = spec.id if spec is not None else None  # the catalog entry's id
        if spec is not None:
            _check_wire(endpoint, spec.id, policy.upstreams[spec.provider].type)
        estimate = endpoint.estimate(payload, model=model)
        plan = policy.plan_of(who.caller.customer)
        trimmed = 0
        if plan is not None:  # the plan's efficiency features shape what is estimated and sent
            try:
                shaped = shape(plan, endpoint, payload, model=model, customer=who.caller.customer,
                               tokens=estimate.tokens)
            except errors.ContextLengthExceeded as exc:  # too long for the plan even when trimmed
                await self._reject(call_id, endpoint, who, model or str(model_id), exc, ())
                exc.request_id, exc.department = call_id, who.caller.department
                raise
            if shaped.payload is not payload:
                payload, trimmed = dict(shaped.payload), shaped.trimmed_tokens
                estimate = endpoint.estimate(payload, model=model)
        if spec is None:
            tokens, priced = estimate.tokens, None
        else:
            tokens = estimate.reserve(spec.context_window)
            priced = _priced_input(spec, tokens, endpoint.cache_write(payload))
        request = CallRequest(who.caller, model_id if model is None else model, tokens,
                              endpoint.requested_output_tokens(payload), endpoint.output_multiplier(payload),
                              input_floor=estimate.floor, priced_input=priced)
        self.ledger.check_accepting()  # refused here, before anything is reserved or forwarded
        stream = endpoint.wants_stream(payload)
        preparation = Preparation(partial(
            _forwarding, call_id, endpoint, payload, request, who, resolution, stream, str(model_id), policy,
            self.admission.store.replica)) if self.prepare_while_reserving else None
        outcome = await self.admission.admit(call_id, request, generation.planner,
                                             None if preparation is None else preparation.sending)
        if isinstance(outcome, Decision):
            await self._alert_exhausted(outcome, generation)
            raise await self._refuse(call_id, endpoint, who, outcome)
        if outcome.decision.new_flags:
            await self._alert_restricted(outcome, generation)
        decision = outcome.decision
        assert decision.model is not None
        upstream = policy.upstreams[decision.model.provider]
        started = time.perf_counter()
        if upstream.tpm is not None:
            await self._wait_for_capacity(call_id, endpoint, who, outcome, upstream.name, upstream.tpm, plan)
        call = _Call(call_id, endpoint, who, outcome, generation, upstream.name, stream,
                     str(model_id), decision.label, resolution, trimmed=trimmed, started=started, ready=ready)
        # From here on the call holds a reservation: every failure must reach _close (see _guarded).
        return await self._guarded(call, partial(self._forward, call, payload, request, client_headers, preparation))

    async def _wait_for_capacity(self, call_id: str, endpoint: Endpoint, who: Attribution, admitted: Admitted,
                                 upstream: str, tpm: int, plan: Plan | None) -> None:
        """Queue for the upstream's declared capacity (SPEC §12); a call refused here is released."""
        request = admitted.request
        tokens = request.input_tokens + admitted.decision.output_tokens * request.choices
        try:
            await self.capacity.acquire(upstream, tokens, tpm, plan.priority if plan else Priority.STANDARD,
                                        float(plan.queue_s) if plan else DEFAULT_QUEUE_S)
        except errors.CostwardenError as exc:
            await self.admission.release(admitted)
            if isinstance(exc, errors.CapacityExceeded):
                await self._reject(call_id, endpoint, who, admitted.decision.requested, exc, ())
            exc.request_id, exc.department = call_id, who.caller.department
            raise

    def _forward(self, call: _Call, payload: dict[str, Any], request: CallRequest, client_headers: Mapping[str, str],
                 preparation: Preparation[tuple[InflightCall, Prepared]] | None) -> Awaitable[Answer | Streaming]:
        """Write the call's write-ahead record and start forwarding it. Returns the coroutine that
        forwards it rather than being one: every resumption of a call passes through each
        coroutine frame it is awaited through, so this makes one frame fewer."""
        admitted = call.admitted
        made = None if preparation is None else preparation.take(admitted.decision, admitted.at)
        inflight, prepared = made or _forwarding(
            call.id, call.endpoint, payload, request, call.who, call.resolution, call.stream, call.sent,
            call.generation.policy, self.admission.store.replica, admitted.decision, admitted.at)
        self.ledger.begin(inflight)
        if call.stream:
            return self._stream(call, prepared.body, prepared.client_wants_usage, client_headers)
        return self._unary(call, prepared.body, client_headers)

    async def _guarded(self, call: _Call, work: Callable[[], Awaitable[T]]) -> T:
        """A failure of the gateway itself, in ``work()`` or what it returns, still frees the call's
        reservation and records its event."""
        try:
            return await work()
        except errors.CostwardenError:
            raise
        except Exception as exc:  # the service's edge: nothing may leak a reservation or lose an event
            log.exception("call %s failed inside the gateway", call.id)
            if not call.closed:
                await self._close(call, None, CallStatus.GATEWAY_ERROR, 500)
            raise errors.CostwardenError(
                f"The gateway failed on this call ({call.id}); it was not charged. Retry it.") from exc

    async def _unary(self, call: _Call, body: bytes, forward: Mapping[str, str]) -> Answer:
        try:
            reply = await call.generation.upstreams.post(call.provider, call.endpoint.path, body, forward)
        except errors.UpstreamError as exc:
            await self._close(call, None, CallStatus.UPSTREAM_UNREACHABLE, exc.status)
            exc.request_id, exc.department = call.id, call.who.caller.department  # its event's id
            raise
        usage = _trusted(call, _usage_of(call.endpoint, reply.body), ok=reply.status < 300)
        if usage is None and reply.status < 300:
            usage = _estimated(call)  # a 2xx without usage is charged its estimate, never nothing
        closing = await self._settle(call, usage, CallStatus.OK if reply.status < 300 else CallStatus.UPSTREAM_ERROR,
                                     reply.status)
        answer = Answer(reply.status, reply.headers.get("content-type", "application/json"), reply.body,
                        _receipt(call, closing.event))
        if call.ready is not None:
            # Once the loop is free, so after the ledger's writer has sent the event (it sends
            # from a callback queued as the event was queued): the commit is then in flight.
            asyncio.get_running_loop().call_soon(call.ready, answer)
        await closing.durable
        self._observe(call, closing)
        return answer

    async def _stream(self, call: _Call, body: bytes, wants_usage: bool,
                      forward: Mapping[str, str]) -> Answer | Streaming:
        resources = AsyncExitStack()
        try:
            reply = await resources.enter_async_context(
                call.generation.upstreams.stream(call.provider, call.endpoint.path, body, forward))
        except errors.UpstreamError as exc:
            await resources.aclose()
            await self._close(call, None, CallStatus.UPSTREAM_UNREACHABLE, exc.status)
            exc.request_id, exc.department = call.id, call.who.caller.department
            raise
        if reply.status >= 300:
            content = b"".join([chunk async for chunk in reply.chunks])
            await resources.aclose()
            event = await self._close(call, _usage_of(call.endpoint, content), CallStatus.UPSTREAM_ERROR,
                                      reply.status)
            return Answer(reply.status, reply.headers.get("content-type", "application/json"), content,
                          _receipt(call, event))
        def usage_extra(usage: Usage) -> Mapping[str, object]:
            priced = self.admission.price(call.admitted, usage.input_tokens, usage.output_tokens,
                                          usage.cached_input_tokens, billed=billed(usage))
            return {"cost": Decimal(format_usd(priced.cost_nanos))}

        tap = call.endpoint.stream_tap(client_wants_usage=wants_usage, usage_extra=usage_extra)

        async def finish(status: CallStatus) -> None:
            usage = _trusted(call, tap.usage, ok=status == CallStatus.OK)
            if status != CallStatus.OK or usage is None:
                usage = (_partial(call, usage, tap.produced_output_tokens) if status != CallStatus.OK
                         else _estimated(call))
            await self._close(call, usage, status, reply.status)

        return Streaming(reply.status, reply.headers.get("content-type", "text/event-stream"),
                         _receipt(call, None), reply, tap, finish, resources)

    async def _close(self, call: _Call, usage: Usage | None, status: CallStatus, http_status: int) -> UsageEvent:
        """Make the event durable and settle (or release) the reservation (``_settle``), and
        return once the event is durable."""
        closing = await self._settle(call, usage, status, http_status)
        await closing.durable
        self._observe(call, closing)
        return closing.event

    async def _settle(self, call: _Call, usage: Usage | None, status: CallStatus, http_status: int) -> _Closing:
        """Hand the event to the ledger and settle (or release) the reservation, the two at once:
        the event's price needs nothing from the counter store. Returns with the event's commit
        still in flight (its ``durable`` must be awaited), unless it fails first."""
        call.closed = True
        admitted = call.admitted
        priced = None if usage is None else self.admission.price(
            admitted, usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, billed=billed(usage))
        event = _event(call, usage, priced, status, http_status, self.clock())
        durable = self.ledger.queue(event)
        settled = priced
        try:
            if priced is None:
                await self.admission.release(admitted)
            else:
                settled = await self.admission.charge(admitted, priced, event.input_tokens + event.output_tokens)
        except errors.StorageError:
            # The counter store failed after the upstream answered. The event is the truth and is
            # recorded all the same; the store's hold lapses and the counters are put right from
            # the ledger (SPEC §10), so the client is never failed for it.
            log.warning("call %s: could not settle its counters; recording its event", call.id, exc_info=True)
        except BaseException:
            await durable
            raise
        return _Closing(event, settled, durable)

    def _observe(self, call: _Call, closing: _Closing) -> None:
        """Tell the observer of an event made durable, once the caller has gone on to answer the
        client: metrics and alerts are no part of a call's latency. (Not a coroutine awaiting
        ``durable`` itself: a frame fewer for the call to be resumed through.)"""
        asyncio.get_running_loop().call_soon(self.observer.on_event, closing.event, closing.settled,
                                             call.generation)

    async def _alert_exhausted(self, decision: Decision, generation: Generation) -> None:
        """A hard budget refused a call: say so once per budget and period (SPEC §13 ``exhausted``)."""
        check = decision.denial.check if decision.denial is not None else None
        if check is not None and await self.admission.first(f"alert|exhausted|{check.window.key}", check.window.end):
            assert decision.denial is not None
            note = exhausted_notification(check, decision.denial.used, generation.timezone)
            self.observer.on_alert(note, generation)

    async def _alert_restricted(self, admitted: Admitted, generation: Generation) -> None:
        """A ``restrict_tiers`` budget tripped: say so once per budget and period (``action``)."""
        flagged = {key for key, _ in admitted.decision.new_flags}
        for check in admitted.plan.budgets:
            if check.flag_key in flagged and await self.admission.first(f"alert|action|{check.window.key}",
                                                                        check.window.end):
                note = restriction_notification(check, check.budget.limit, generation.timezone)
                self.observer.on_alert(note, generation)

    async def _refuse(self, call_id: str, endpoint: Endpoint, who: Attribution,
                      decision: Decision) -> errors.CostwardenError:
        assert decision.denial is not None
        exc = decision.denial.exception()
        await self._reject(call_id, endpoint, who, decision.requested, exc, decision.shadow)
        exc.request_id, exc.department, exc.rate = call_id, who.caller.department, decision.rate
        return exc

    async def _reject(self, call_id: str, endpoint: Endpoint, who: Attribution, requested: str,
                      exc: errors.CostwardenError, shadow: tuple[str, ...]) -> None:
        """Record a refused call."""
        caller = who.caller
        rejection = Rejection(id=call_id, at=self.clock(), department=caller.department,
                              model_requested=requested, code=exc.code or "", message=exc.message,
                              http_status=exc.status, endpoint=endpoint.path, team=caller.team, key_id=caller.key_id,
                              user=caller.user, tags=who.tags, shadow=shadow)
        await self.ledger.record_rejection(rejection)
        self.observer.on_rejection(rejection)


def _priced_input(spec: ModelSpec, tokens: int, write: TokenType | None) -> int | None:
    """The input a worst case is priced on when the request may be billed it as cache writes:
    as many input-priced tokens as cost what ``tokens`` cost at the write rate (None: no premium)."""
    if write is None:
        return None
    rates = spec.pricing.rates()
    per_input, per_write = rates[TokenType.INPUT], rates[write]
    if per_write <= per_input or per_input == 0:
        return None
    return -(-tokens * per_write // per_input)


def billed(usage: Usage) -> Billed | None:
    """How the provider bills ``usage``: by token type, service tier and server-side tool calls.
    None for the usual usage, plain and cached input and output at the standard tier, which
    ``ModelSpec.cost`` prices to the same nano-dollar without building the breakdown."""
    tier = service_tier_of(usage.service_tier)
    if (tier is ServiceTier.STANDARD and not usage.tool_calls and usage.cached_input_tokens <= usage.input_tokens
            and not (usage.cache_write_5m_tokens or usage.cache_write_1h_tokens or usage.reasoning_tokens
                     or usage.audio_input_tokens)):
        return None
    return Billed(usage.by_type(), tier, usage.tool_calls or None)


def _receipt(call: _Call, event: UsageEvent | None) -> Receipt:
    return Receipt(call.id, call.who.caller.department, call.admitted.decision,
                   None if event is None else event.cost_nanos, call.trimmed)


def _upstream_model(resolution: Resolution | None, served: ModelSpec) -> str:
    """The model id to send upstream: the client's own (less a provider prefix) when the entry it
    names (``resolution``) is served, else the id of the entry served instead (a downgrade)."""
    return resolution.upstream_id if resolution is not None and resolution.spec.id == served.id else served.id


def _check_wire(endpoint: Endpoint, model: str, upstream_type: UpstreamType) -> None:
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


def _trusted(call: _Call, usage: Usage | None, *, ok: bool) -> Usage | None:
    """Malformed usage (negative, non-numeric counts) is treated as missing: a finished call is
    charged its estimate, still marked ``malformed`` for its event; anything else as reporting none."""
    if usage is None or not usage.malformed:
        return usage
    return replace(_estimated(call), malformed=True) if ok else None


def _estimated(call: _Call) -> Usage:
    request = call.admitted.request
    return Usage(request.input_tokens, 0, call.admitted.decision.output_tokens * request.choices)


def _partial(call: _Call, reported: Usage | None, produced: int) -> Usage:
    """What a stream cut short is charged: its input, and the output it produced."""
    if reported is not None:
        return replace(reported, output_tokens=max(reported.output_tokens, produced))
    return Usage(call.admitted.request.input_tokens, 0, produced)


def _forwarding(call_id: str, endpoint: Endpoint, payload: dict[str, Any], request: CallRequest, who: Attribution,
                resolution: Resolution | None, stream: bool, sent: str, policy: Policy, replica: str,
                decision: Decision, at: datetime) -> tuple[InflightCall, Prepared]:
    """What forwarding a call admitted with ``decision`` at ``at`` takes: its write-ahead record
    and the request to send upstream (``sent``: the model id as the client sent it)."""
    model = decision.model
    assert model is not None
    caller = who.caller
    inflight = InflightCall(
        id=call_id, admitted_at=at, department=caller.department, model_requested=decision.requested,
        model_served=model.id, provider=policy.upstreams[model.provider].name, endpoint=endpoint.path,
        estimate_input_tokens=request.input_tokens, estimate_output_tokens=decision.output_tokens * request.choices,
        estimate_nanos=decision.estimate_nanos, price_version=model.price_version, team=caller.team,
        key_id=caller.key_id, user=caller.user, tags=who.tags, decision=decision.label, stream=stream,
        replica=replica, model_sent=sent, customer=caller.customer or "")
    prepared = endpoint.prepare(payload, model=_upstream_model(resolution, model),
                                output_bound=_bound_to_send(request, decision), stream=stream)
    return inflight, prepared


def _event(call: _Call, usage: Usage | None, settled: Settled | None, status: CallStatus, http_status: int,
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
        decision=call.label, status=status, http_status=http_status,
        latency_ms=int((time.perf_counter() - call.started) * 1000),
        overrun_tokens=settled.overrun_tokens if settled else 0, shadow=decision.shadow, stream=call.stream,
        model_sent=call.sent, cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens, reasoning_tokens=usage.reasoning_tokens,
        audio_input_tokens=usage.audio_input_tokens, service_tier=usage.service_tier or "",
        tool_calls=usage.tool_calls, usage_malformed=usage.malformed, customer=caller.customer or "",
        trimmed_tokens=call.trimmed)
