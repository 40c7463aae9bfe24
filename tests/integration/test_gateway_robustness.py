"""Bad input gets a clear error and loses nothing; upstream failures and disconnects are metered."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway_fixtures import Gateway, start_gateway
from service_fixtures import RedisServer

SLOW_POLICY = """
version: 1
upstreams:
  openai:    {type: openai,    base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY, timeout_s: 1}
  anthropic: {type: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
  deadhost:  {type: openai,    base_url: "http://127.0.0.1:9/v1", api_key_env: OPENAI_API_KEY}
models:
  dead-model: {provider: deadhost, tier: 1, input: 1, output: 1}
departments:
  SALES: {}
  MARKETING: {}
  ENGINEERING: {}
  HR: {}
  SUPPORT: {teams: {TIER1-DESK: {}}}
"""


@pytest.fixture
def small_gateway(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path, mock_url, SLOW_POLICY, max_body_mb=1)


def post(gw: Gateway, body: object = None, *, path: str = "/v1/chat/completions", dept: str = "SALES",
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body if raw is None else None, content=raw,
                      headers={"Authorization": f"Bearer {gw.keys[dept]}", **(headers or {})}, timeout=30)


def chat(text: str, model: str = "gpt-4o-mini", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def wait_for_events(gw: Gateway, count: int, timeout: float = 10.0) -> list:  # type: ignore[type-arg]
    """Poll the ledger until ``count`` events are durable (a disconnect settles asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        found = gw.ledger_query(lambda ledger: ledger.list_events(limit=1000))
        if len(found) >= count or time.monotonic() > deadline:
            return found  # type: ignore[no-any-return]
        time.sleep(0.05)


def error(reply: httpx.Response) -> dict[str, object]:
    body: dict[str, object] = reply.json()["error"]
    return body


def test_malformed_requests(gateway: Gateway) -> None:
    bad_json = post(gateway, raw=b'{"model": "gpt-4o-mini", "messages": [', headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and error(bad_json)["type"] == "invalid_request_error"
    assert "not valid JSON" in str(error(bad_json)["message"])
    not_object = post(gateway, raw=b"[1, 2]")
    assert not_object.status_code == 400
    no_model = post(gateway, {"messages": [{"role": "user", "content": "hi"}]})
    assert no_model.status_code == 400 and error(no_model)["param"] == "model"
    bad_messages = post(gateway, {"model": "gpt-4o-mini", "messages": "hi"})
    assert bad_messages.status_code == 400
    assert gateway.ledger_query(lambda ledger: ledger.count_events()) == 0


def test_unknown_fields_pass_through(gateway: Gateway) -> None:
    reply = post(gateway, chat("hi", temperature=0.2, some_future_field={"x": 1}, seed=7))
    assert reply.status_code == 200


def test_oversized_body_is_refused(small_gateway: Gateway) -> None:
    reply = post(small_gateway, chat("x" * (2 * 1024 * 1024)))
    assert reply.status_code == 413
    assert error(reply)["code"] == "request_too_large" and error(reply)["type"] == "invalid_request_error"
    assert post(small_gateway, chat("still up")).status_code == 200


def test_context_window_is_enforced(gateway: Gateway) -> None:
    reply = post(gateway, chat("word " * 200_000))  # ~1 MB: far over gpt-4o-mini's 128k tokens
    assert reply.status_code == 400 and error(reply)["code"] == "context_length_exceeded"


def test_upstream_error_is_passed_through_and_not_charged(gateway: Gateway) -> None:
    reply = post(gateway, chat("fail please #mock status=500"))
    assert reply.status_code == 500
    assert "error" in reply.json()
    [event] = wait_for_events(gateway, 1)
    assert event.status == "upstream_error" and event.http_status == 500 and event.cost_nanos == 0
    assert reply.headers["x-costwarden-cost-usd"] == "0"


def test_upstream_timeout_is_504(small_gateway: Gateway) -> None:
    reply = post(small_gateway, chat("slow #mock delay_ms=3000"))
    assert reply.status_code == 504 and error(reply)["code"] == "upstream_error"
    [event] = wait_for_events(small_gateway, 1)
    assert event.status == "upstream_unreachable" and event.cost_nanos == 0
    # the answer names its event, as every proxied call's does
    assert reply.headers["x-request-id"] == event.id and reply.headers["x-costwarden-department"] == "SALES"


def test_unreachable_upstream_is_502(small_gateway: Gateway) -> None:
    reply = post(small_gateway, chat("hello", model="dead-model"))
    assert reply.status_code == 502 and error(reply)["type"] == "api_error"
    assert "deadhost" in str(error(reply)["message"])
    streamed = post(small_gateway, chat("hello", model="dead-model", stream=True))
    assert streamed.status_code == 502
    events = {event.id: event for event in wait_for_events(small_gateway, 2)}
    for answer in (reply, streamed):
        assert events[answer.headers["x-request-id"]].status == "upstream_unreachable"
    assert post(small_gateway, chat("the gateway stays up")).status_code == 200


def test_client_disconnect_mid_stream_is_settled(gateway: Gateway) -> None:
    body = chat("long story #mock output_tokens=400 chunk_delay_ms=20", stream=True)
    received = 0
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {gateway.keys['SALES']}"}) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received >= 10:
                break
    [event] = wait_for_events(gateway, 1)
    assert event.status == "client_disconnect"
    assert 9 <= event.output_tokens < 400  # the first chunk carries the role; then one token each
    assert event.cost_nanos > 0
    post(gateway, chat("next call works"))


def test_stream_cut_by_the_upstream_is_charged_for_what_it_sent(gateway: Gateway) -> None:
    body = chat("cut #mock output_tokens=50 cut_after=7", stream=True)
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {gateway.keys['SALES']}"}) as reply:
        lines = list(reply.iter_lines())
    assert "data: [DONE]" not in lines  # the client can tell the stream was cut
    assert sum(line.startswith("data: {") for line in lines) == 8  # the role chunk and 7 tokens
    [event] = wait_for_events(gateway, 1)
    assert event.status == "stream_cut" and event.output_tokens == 7


def test_anthropic_errors_use_anthropic_shape(gateway: Gateway) -> None:
    reply = httpx.post(f"{gateway.url}/v1/messages", json={"model": "claude-haiku-4-5", "max_tokens": 5,
                                                          "messages": [{"role": "user", "content": "x"}]},
                       headers={"x-api-key": "cw-wrong"})
    assert reply.status_code == 401
    assert reply.json()["type"] == "error" and reply.json()["error"]["type"] == "authentication_error"
    wrong_wire = post(gateway, chat("x", model="claude-haiku-4-5"))
    assert wrong_wire.status_code == 400 and "/v1/messages" in str(error(wrong_wire)["message"])


@pytest.mark.service
def test_readyz_and_hard_checked_calls_say_503_at_once_while_redis_hangs(tmp_path: Path, mock_url: str, redis_server: RedisServer) -> None:
    assert redis_server.process is not None
    started = start_gateway(tmp_path, mock_url, redis_url=redis_server.url)
    gateway = next(started)
    try:
        assert httpx.get(f"{gateway.url}/readyz").status_code == 200
        redis_server.process.send_signal(signal.SIGSTOP)  # neither an error nor a reply: a partition, a stall
        try:
            # the Redis client would wait 10 s per attempt, three times, before saying it failed
            ready = httpx.get(f"{gateway.url}/readyz", timeout=8)
            assert ready.status_code == 503 and ready.json()["checks"]["counters"] is False
            # a hard-checked call is refused as soon as the store is known not to answer, not 30 s later
            refused = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat("held?"), timeout=8,
                                 headers={"Authorization": f"Bearer {gateway.keys['HR']}"})
            assert refused.status_code == 503 and refused.headers["x-should-retry"] == "true"
            assert error(refused)["code"] == "storage_unavailable"
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while httpx.get(f"{gateway.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "still not ready after Redis answered again"
            time.sleep(0.1)
    finally:
        started.close()


def test_health_ready_and_metrics(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"policy": True, "ledger": True, "counters": True}
    post(gateway, chat("count me"))
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'costwarden_calls_total{department="SALES",model="gpt-4o-mini",status="ok"} 1.0' in metrics
    assert "costwarden_cost_usd_total" in metrics
