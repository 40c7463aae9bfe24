"""Gateway routes: parse, authenticate, attribute, call the service, render.

The proxied paths are raw ASGI handlers rather than Starlette request/response endpoints: a call
through the gateway is mostly plumbing, and Starlette's Request, Headers and Response objects
were a measurable share of it. Each call captures the runtime's policy generation once and keeps
it to the end, whatever reload happens meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from costwarden import errors
from costwarden.app.auth import attribute
from costwarden.app.runtime import Runtime
from costwarden.app.service import Answer
from costwarden.core.catalog import ModelSpec
from costwarden.core.decision import active_restriction
from costwarden.core.kinds import UpstreamType
from costwarden.core.scopes import Caller, Planner
from costwarden.http.bodies import header_map, parse_json, read_body, receive_body
from costwarden.http.errors import ClientGone, error_response, unexpected
from costwarden.http.headers import call_headers
from costwarden.http.streaming import MeteredStream
from costwarden.providers import ENDPOINTS

log = logging.getLogger(__name__)
COUNT_TOKENS = "/v1/messages/count_tokens"


def answer_start(answer: Answer, *, anthropic: bool = False) -> dict[str, Any]:
    """The ``http.response.start`` message of a complete answer (content-length included)."""
    headers = call_headers(answer.receipt, anthropic=anthropic)
    headers.append((b"content-type", answer.content_type.encode("latin-1")))
    if not (answer.status < 200 or answer.status in (204, 304)):
        headers.append((b"content-length", b"%d" % len(answer.body)))
    return {"type": "http.response.start", "status": answer.status, "headers": headers}


class ProxyHandler:
    """The ASGI handler of one proxied path. It answers every failure itself, in the API's shape,
    up to the start of its response, so that ``GatewayApp`` can call it without Starlette's
    middleware in between."""

    def __init__(self, path: str, wire: str) -> None:
        self.path = path
        self.anthropic = wire == "anthropic"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            runtime: Runtime = scope["app"].state.runtime
            generation = runtime.generation
            endpoint = runtime.endpoints[self.path]
            headers = header_map(scope["headers"])
            identity = runtime.keys.authenticate(headers)
            body = await receive_body(receive, headers.get("content-length"), runtime.settings.max_body_bytes)
            payload = parse_json(body)
            endpoint.validate(payload)
            who = attribute(generation.policy, identity, headers, payload)
            starts: list[dict[str, Any]] = []

            def ready(answer: Answer) -> None:  # its event is being committed meanwhile
                starts.append(answer_start(answer, anthropic=self.anthropic))

            result = await runtime.service.call(generation, endpoint, payload, who, headers, ready)
            if isinstance(result, Answer):
                start = starts[0] if starts else answer_start(result, anthropic=self.anthropic)
            else:
                stream = MeteredStream(result, anthropic=self.anthropic)
        except errors.CostwardenError as exc:
            await error_response(exc, anthropic=self.anthropic)(scope, receive, send)
            return
        except ClientGone:
            return
        except Exception:  # the outermost edge: answer in the API's error shape, never a bare 500 page
            log.exception("unexpected failure on %s", self.path)
            await error_response(unexpected("this request"), anthropic=self.anthropic)(scope, receive, send)
            return
        if isinstance(result, Answer):
            await send(start)
            await send({"type": "http.response.body", "body": result.body})
            return
        await stream(scope, receive, send)


def _model_object(model: ModelSpec, *, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {"type": "model", "id": model.id, "display_name": model.id, "created_at": "2024-01-01T00:00:00Z"}
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider, "tier": model.tier}


async def _restricted_tiers(runtime: Runtime, planner: Planner, caller: Caller) -> frozenset[int] | None:
    """The tiers a tripped ``restrict_tiers`` budget still serves ``caller`` until its period ends
    (None: no restriction). A store that cannot say leaves the listing to the department's rights."""
    now = runtime.admission.clock()
    stamp = now.timestamp()
    plan = planner.plan(caller, now, stamp)
    if not plan.restricting:
        return None
    try:
        seen = await runtime.admission.store.snapshot(plan.windows, plan.flag_keys, stamp)
    except errors.StorageError:
        return None
    return active_restriction(plan, seen.flags)


async def list_models(request: Request) -> Response:
    """GET /v1/models: only what the caller's department may use, and while a ``restrict_tiers``
    budget is tripped only the tiers it still serves (Anthropic shape on request);
    GET /v1/models/{model}: one of them, by any id that resolves to it, else 404 model_not_found."""
    runtime: Runtime = request.app.state.runtime
    generation = runtime.generation
    policy = generation.policy
    anthropic = "anthropic-version" in request.headers
    wanted: str | None = request.path_params.get("model")
    try:
        identity = runtime.keys.authenticate(request.headers)
        who = attribute(policy, identity, request.headers, {})
        dept = policy.departments[who.caller.department]
        tiers = await _restricted_tiers(runtime, generation.planner, who.caller)

        def served(model: ModelSpec) -> bool:
            return dept.may_use(model.id, model.tier) and (tiers is None or model.tier in tiers)

        if wanted is not None:
            resolution = policy.catalog.resolution(wanted)
            if resolution is None or not served(resolution.spec):
                raise errors.ModelNotFound(f"The model {wanted!r} does not exist in this gateway's catalog or is not "
                                           f"one department {dept.id} may use. GET /v1/models lists them.")
            return Response(orjson.dumps(_model_object(resolution.spec, anthropic=anthropic)),
                            media_type="application/json")
    except errors.CostwardenError as exc:
        return error_response(exc, anthropic=anthropic)
    data = [_model_object(m, anthropic=anthropic) for m in policy.catalog.values() if served(m)]
    if anthropic:
        body: dict[str, Any] = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                "last_id": data[-1]["id"] if data else None}
    else:
        body = {"object": "list", "data": data}
    return Response(orjson.dumps(body), media_type="application/json")


async def count_tokens(request: Request) -> Response:
    """POST /v1/messages/count_tokens: passed through to the model's Anthropic upstream, not charged
    and not recorded (it generates nothing). The caller must still hold a valid key and department."""
    runtime: Runtime = request.app.state.runtime
    generation = runtime.generation
    policy = generation.policy
    try:
        identity = runtime.keys.authenticate(request.headers)
        body = await read_body(request, runtime.settings.max_body_bytes)
        payload = parse_json(body)
        attribute(policy, identity, request.headers, payload)
        model = payload.get("model")
        # a snapshot, alias or prefixed id resolves as on every other call (SPEC §9)
        resolution = policy.catalog.resolution(model) if isinstance(model, str) else None
        if resolution is None:
            raise errors.ModelNotFound(f"Unknown model {model!r}: count_tokens needs a model the catalog knows.",
                                       param="model")
        spec = resolution.spec
        upstream = policy.upstreams[spec.provider]
        if upstream.type != UpstreamType.ANTHROPIC:
            raise errors.InvalidRequest(f"{spec.id} is not served by an Anthropic upstream; count_tokens is "
                                        "Anthropic's endpoint.", param="model")
        if resolution.upstream_id != model:  # a provider prefix is not sent upstream
            body = orjson.dumps({**payload, "model": resolution.upstream_id})
        reply = await generation.upstreams.post(upstream.name, COUNT_TOKENS, body,
                                                header_map(request.headers.raw))
    except errors.CostwardenError as exc:
        return error_response(exc, anthropic=True)
    return Response(reply.body, status_code=reply.status,
                    media_type=reply.headers.get("content-type", "application/json"))


def proxy_handlers() -> dict[str, ProxyHandler]:
    """The handler of every proxied path (POST), by path."""
    return {path: ProxyHandler(path, endpoint.wire) for path, endpoint in ENDPOINTS.items()}


def gateway_routes(handlers: dict[str, ProxyHandler] | None = None) -> list[Route]:
    """The gateway's routes; ``handlers``: the proxied paths' handlers (``proxy_handlers()``)."""
    handlers = proxy_handlers() if handlers is None else handlers
    routes = [Route(path, handler, methods=["POST"]) for path, handler in handlers.items()]
    routes.append(Route(COUNT_TOKENS, count_tokens, methods=["POST"]))
    routes.append(Route("/v1/models", list_models, methods=["GET"]))
    routes.append(Route("/v1/models/{model:path}", list_models, methods=["GET"]))
    return routes
