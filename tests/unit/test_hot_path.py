"""The hot path's shortcuts answer exactly as the general code they bypass."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from costwarden.app.metrics import Metrics
from costwarden.app.service import Receipt
from costwarden.core.decision import Decision, RateInfo
from costwarden.core.events import UsageEvent
from costwarden.http.app import GatewayApp
from costwarden.http.bodies import header_map
from costwarden.http.headers import call_headers, rate_headers, rfc3339, usd
from costwarden.http.timeouts import server_options
from costwarden.ledger.schema import inflight, usage_events
from costwarden.ledger.sqlite_statements import SqliteInsert
from costwarden.providers import tokens
from costwarden.providers.jsontext import dumps
from costwarden.providers.tokens import InputTally, TokenEstimator
from costwarden.providers.usage import Usage, count, openai_usage, valid_count

# -- the direct dispatch of proxied paths ---------------------------------------------------------


class Recorder:
    """An ASGI handler that answers with whether Starlette's router saw the call."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["path"].endswith("/boom"):
            raise RuntimeError("boom")
        routed = "routed" if "router" in scope else "direct"
        await PlainTextResponse(routed)(scope, receive, send)


def app_with(handler: Recorder) -> GatewayApp:
    paths = ("/v1/chat/completions", "/v1/boom")
    return GatewayApp(proxied={path: handler for path in paths},
                      routes=[Route(path, handler, methods=["POST"]) for path in paths])


async def ask(app: GatewayApp, method: str, path: str, *, root_path: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.request(method, path)


async def test_a_post_to_a_proxied_path_goes_straight_to_its_handler() -> None:
    handler = Recorder()
    app = app_with(handler)
    answer = await ask(app, "POST", "/v1/chat/completions")
    assert (answer.status_code, answer.text) == (200, "direct")
    assert handler.scopes[0]["app"] is app  # the handler finds the runtime on it


async def test_everything_else_goes_through_starlette() -> None:
    handler = Recorder()
    app = app_with(handler)
    assert (await ask(app, "GET", "/v1/chat/completions")).status_code == 405
    assert (await ask(app, "POST", "/v1/unknown")).status_code == 404
    mounted = await ask(app, "POST", "/gw/v1/chat/completions", root_path="/gw")
    assert (mounted.status_code, mounted.text) == (200, "routed")


async def test_an_exception_a_handler_lets_out_is_logged_and_raised(caplog: pytest.LogCaptureFixture) -> None:
    app = app_with(Recorder())
    with pytest.raises(RuntimeError, match="boom"):
        await ask(app, "POST", "/v1/boom")
    assert "unexpected failure on POST /v1/boom" in caplog.text


async def test_forwarded_headers_of_a_trusted_proxy_apply_to_routed_requests() -> None:
    # The server leaves X-Forwarded-* to the app, which applies them as uvicorn would to all but
    # the proxied calls (which read neither the client's address nor the scheme).
    handler = Recorder()
    app = app_with(handler)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.post("/v1/unknown", headers=forwarded)).status_code == 404
        assert (await client.post("/v1/chat/completions", headers=forwarded)).text == "direct"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, root_path="/gw", client=("127.0.0.1", 5000)),
                                 base_url="http://gw") as client:
        assert (await client.post("/gw/v1/chat/completions", headers=forwarded)).text == "routed"
    routed = handler.scopes[-1]
    assert (routed["scheme"], routed["client"]) == ("https", ("203.0.113.7", 0))
    untrusted = GatewayApp(proxied={}, forwarded_allow_ips="10.0.0.1",
                           routes=[Route("/v1/other", handler, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=untrusted, client=("127.0.0.1", 5000)),
                                 base_url="http://gw") as client:
        await client.post("/v1/other", headers=forwarded)
    assert (handler.scopes[-1]["scheme"], handler.scopes[-1]["client"]) == ("http", ("127.0.0.1", 5000))
    assert server_options(10.0, 60.0, 4096)["proxy_headers"] is False


# -- usage parsing ----------------------------------------------------------------------------------

def reference_usage(usage: object, tier: object) -> Usage | None:
    """The general reading (every field through valid_count and count), for comparison."""
    if not isinstance(usage, dict):
        return None
    malformed = False

    def read(field: str, details: str | None = None) -> int:
        nonlocal malformed
        holder = usage if details is None else usage.get(details)
        if details is not None and holder is not None and not isinstance(holder, dict):
            malformed = True
        value = holder.get(field) if isinstance(holder, dict) else None
        if not valid_count(value):
            malformed = True
        return count(value)

    prompt = read("prompt_tokens")
    cached = min(read("cached_tokens", "prompt_tokens_details"), prompt)
    audio = min(read("audio_tokens", "prompt_tokens_details"), prompt - cached)
    output = read("completion_tokens")
    reasoning = min(read("reasoning_tokens", "completion_tokens_details"), output)
    return Usage(prompt, cached, output, malformed, reasoning_tokens=reasoning, audio_input_tokens=audio,
                 service_tier=tier if isinstance(tier, str) else None)


counts = st.one_of(st.none(), st.integers(-3, 10**12), st.booleans(), st.floats(allow_nan=False), st.text(max_size=3))
details = st.one_of(st.none(), st.integers(), st.dictionaries(st.sampled_from(["cached_tokens", "audio_tokens",
                                                                              "reasoning_tokens"]), counts))
usages = st.fixed_dictionaries({}, optional={"prompt_tokens": counts, "completion_tokens": counts,
                                             "prompt_tokens_details": details,
                                             "completion_tokens_details": details})


@given(usages, st.one_of(st.none(), st.integers(), st.sampled_from(["default", "flex", "priority"])))
def test_openai_usage_reads_every_shape_as_the_general_reading(usage: dict[str, Any], tier: object) -> None:
    assert openai_usage(usage, tier) == reference_usage(usage, tier)


def test_openai_usage_of_no_object_is_none() -> None:
    assert openai_usage(None, "flex") is None
    assert openai_usage([1, 2], None) is None


# -- token estimation -------------------------------------------------------------------------------

def test_the_tokenizer_of_a_model_is_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_KNOWN_MODELS", 3)
    estimator, fresh = TokenEstimator(), TokenEstimator()
    tally = InputTally(texts=["Summarise the quarterly report in one line.", "héllo wörld"], messages=2)
    models = ["gpt-4o-mini", "gpt-4", "claude-sonnet-4", "gpt-4o-mini", "unknown-1", "unknown-2", "gpt-4"]
    for model in models:
        assert estimator.estimate(tally, model=model) == TokenEstimator().estimate(tally, model=model)
        assert estimator.counter_for(model) is fresh.counter_for(model)
    assert len(estimator._counters) == 3  # the bound holds


def test_texts_counted_before_count_the_same_and_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_REMEMBERED_CHARS", 80)
    counted: list[str] = []

    def counter(text: str) -> int:
        counted.append(text)
        return len(text.split())

    estimator = TokenEstimator(counter=counter)
    system, question = "You are a terse assistant.", "What is the weather in Paris today?"
    first = estimator.estimate(InputTally(texts=[system, question], messages=2), model="gpt-4o")
    again = estimator.estimate(InputTally(texts=[system, question], messages=2), model="gpt-4o")
    assert first == again == TokenEstimator(counter=counter).estimate(
        InputTally(texts=[system, question], messages=2), model="gpt-4o")
    assert counted == [system, question, system, question]  # the second estimate counted nothing anew
    long = "word " * 20  # 100 characters, longer than the whole bound: counted every time, never kept
    estimator.estimate(InputTally(texts=[long, long]), model="gpt-4o")
    assert counted[-2:] == [long, long]
    estimator.estimate(InputTally(texts=["a b c " * 5]), model="gpt-4o")  # 30 more: past the bound, all dropped
    estimator.estimate(InputTally(texts=[system]), model="gpt-4o")
    assert counted[-1] == system
    assert sum(len(text) for text in estimator._counts[counter]._known) <= 80


# -- JSON text --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12)


@given(json_values)
def test_dumps_writes_plain_values_as_orjson_does(value: object) -> None:
    assert dumps(value) == orjson.dumps(value)


def test_dumps_keeps_exact_decimals_and_big_integers() -> None:
    assert dumps({"cost": Decimal("0.0000045"), "n": 1}) == b'{"cost":0.0000045,"n":1}'
    assert json.loads(dumps({"big": 2**70})) == {"big": 2**70}


# -- metrics ----------------------------------------------------------------------------------------

def event(**fields: Any) -> UsageEvent:
    from datetime import UTC, datetime
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base: dict[str, Any] = dict(id="req_1", admitted_at=now, finished_at=now, department="SALES",
                                model_requested="gpt-4o-mini", model_served="gpt-4o-mini", provider="openai",
                                endpoint="/v1/chat/completions", input_tokens=20, output_tokens=10,
                                cost_nanos=9_000, latency_ms=12)
    return UsageEvent(**{**base, **fields})


def test_metrics_add_up_and_a_series_appears_once_it_moves() -> None:
    metrics = Metrics()
    metrics.on_event(event(), None)
    metrics.on_event(event(cost_nanos=0), None)
    text = metrics.render().decode()
    assert 'costwarden_calls_total{department="SALES",model="gpt-4o-mini",status="ok"} 2.0' in text
    assert 'costwarden_tokens_total{department="SALES",model="gpt-4o-mini",type="input"} 40.0' in text
    assert 'costwarden_cost_usd_total{department="SALES",model="gpt-4o-mini"} 9e-06' in text
    assert 'costwarden_call_duration_seconds_count{department="SALES",model="gpt-4o-mini"} 2.0' in text
    assert "cached_input" not in text  # no cached tokens yet: no series
    metrics.on_event(event(cached_input_tokens=5), None)
    assert 'type="cached_input"} 5.0' in metrics.render().decode()


# -- response headers -------------------------------------------------------------------------------

def reference_call_headers(receipt: Receipt, *, anthropic: bool) -> list[tuple[bytes, bytes]]:
    """The headers of a call as SPEC section 4 lists them, built the plain way."""
    decision = receipt.decision
    headers = {"x-request-id": receipt.id, "x-costwarden-department": receipt.department}
    if receipt.cost_nanos is not None:
        headers["x-costwarden-cost-usd"] = usd(receipt.cost_nanos)
    if decision.remaining_nanos is not None:
        spent = receipt.cost_nanos if receipt.cost_nanos is not None else decision.estimate_nanos
        headers["x-costwarden-budget-remaining-usd"] = usd(max(0, decision.remaining_nanos
                                                               + decision.estimate_nanos - spent))
    if decision.downgraded_from:
        headers["x-costwarden-downgraded-from"] = decision.downgraded_from
    if decision.clamped:
        headers["x-costwarden-max-tokens-clamped"] = str(decision.output_tokens)
    if receipt.trimmed_tokens:
        headers["x-costwarden-context-trimmed"] = str(receipt.trimmed_tokens)
    if decision.shadow:
        headers["x-costwarden-shadow"] = "; ".join(decision.shadow)
    rate = decision.rate
    for kind, limit, remaining, reset, reset_at in (
            ("requests", rate.limit_requests, rate.remaining_requests, rate.reset_requests_s, rate.reset_requests_at),
            ("tokens", rate.limit_tokens, rate.remaining_tokens, rate.reset_tokens_s, rate.reset_tokens_at)
    ) if rate is not None else ():
        if limit is None:
            continue
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        headers[f"x-ratelimit-reset-{kind}"] = f"{reset}s"
        if anthropic:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = datetime.fromtimestamp(reset_at, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


nanos = st.integers(0, 10**15)
limits = st.one_of(st.none(), st.integers(1, 10**9))
instants = st.integers(1_700_000_000, 1_900_000_000)
rates = st.one_of(st.none(), st.builds(RateInfo, limits, st.integers(0, 10**9), st.integers(0, 3600), limits,
                                       st.integers(0, 10**9), st.integers(0, 3600), instants, instants))
decisions = st.builds(Decision, requested=st.just("gpt-4o-mini"), output_tokens=st.integers(1, 10**5),
                      estimate_nanos=nanos, clamped=st.booleans(),
                      downgraded_from=st.one_of(st.none(), st.just("gpt-4o")),
                      shadow=st.lists(st.sampled_from(["dept:RD/0", "org/1"]), max_size=2).map(tuple),
                      remaining_nanos=st.one_of(st.none(), nanos), rate=rates)
receipts = st.builds(Receipt, st.just("req_" + "0" * 32), st.sampled_from(["BENCH", "R&D-É"]), decisions,
                     st.one_of(st.none(), nanos), st.integers(0, 5000))


@given(receipts, st.booleans())
def test_call_headers_are_those_spec_lists_in_their_order(receipt: Receipt, anthropic: bool) -> None:
    assert call_headers(receipt, anthropic=anthropic) == reference_call_headers(receipt, anthropic=anthropic)


@given(rates.filter(lambda rate: rate is not None), st.booleans())
def test_rate_headers_of_a_refusal_are_those_of_a_call(rate: RateInfo, anthropic: bool) -> None:
    receipt = Receipt("req_1", "BENCH", Decision(requested="m", rate=rate), None)
    expected = reference_call_headers(receipt, anthropic=anthropic)[2:]
    assert [(name.encode(), value.encode()) for name, value in rate_headers(rate, anthropic=anthropic).items()] \
        == expected


def test_an_instant_is_written_in_rfc3339_whether_remembered_or_not() -> None:
    assert rfc3339(1_764_640_147) == rfc3339(1_764_640_147) == "2025-12-02T01:49:07Z"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


# -- ledger rows as the writer process binds them ---------------------------------------------------

def column_values(table: Table) -> st.SearchStrategy[dict[str, Any]]:
    """Rows of ``table``: a value of each column's type (None where it may be null)."""
    def of(column: Column[Any]) -> st.SearchStrategy[Any]:
        python = getattr(column.type, "impl", column.type).python_type  # a decorated type: its base
        kind = {bool: st.booleans(), int: st.integers(-(2**63), 2**63 - 1), str: st.text(max_size=8),
                datetime: st.datetimes(timezones=st.just(UTC))}[python]
        return st.one_of(st.none(), kind) if column.nullable else kind
    return st.fixed_dictionaries({column.name: of(column) for column in table.c})


@pytest.mark.parametrize("table", [usage_events, inflight], ids=lambda table: table.name)
@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=lambda dialect: dialect.name)
def test_a_rows_values_are_bound_as_sqlalchemy_binds_them(table: Table, dialect: Dialect) -> None:
    keys = tuple(column.name for column in table.c)
    insert = SqliteInsert(table, keys, dialect)
    processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in table.c]

    @given(column_values(table))
    def check(row: dict[str, Any]) -> None:
        expected = [value if process is None else process(value)
                    for value, process in zip([row[key] for key in keys], processors, strict=True)]
        if dialect.name == "postgresql":  # times go as ISO 8601 text there
            expected = [value.isoformat() if isinstance(value, datetime) else value for value in expected]
        got = insert.values(row)
        assert got == expected
        assert [type(value) for value in got] == [type(value) for value in expected]  # 1, not True

    check()


# -- request headers --------------------------------------------------------------------------------

@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"X-Tags", b"x-tags", b"content-type", b"x-user-id"]),
                          st.binary(max_size=6)), max_size=8))
def test_request_headers_are_read_first_one_wins_in_their_order(raw: list[tuple[bytes, bytes]]) -> None:
    expected: dict[str, str] = {}
    for name, value in raw:
        expected.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    got = header_map(raw)
    assert got == expected
    assert list(got) == list(expected)
