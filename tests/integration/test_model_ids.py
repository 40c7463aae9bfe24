"""Snapshot, alias and prefixed model ids through the gateway: admitted as their catalog entry,
forwarded as sent (less a provider prefix), recorded against the entry (SPEC section 9)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from gateway_fixtures import Gateway


def chat(gw: Gateway, model: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gw.keys['SALES']}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20},
                      timeout=30)


def test_snapshots_aliases_and_prefixes_are_served_as_their_entry(gateway: Gateway) -> None:
    dated = chat(gateway, "gpt-4o-mini-2024-07-18")
    assert dated.status_code == 200, dated.text
    assert dated.json()["model"] == "gpt-4o-mini-2024-07-18"  # the upstream got the id as sent
    prefixed = chat(gateway, "openai/gpt-4o-mini")
    assert prefixed.status_code == 200 and prefixed.json()["model"] == "gpt-4o-mini"  # less its prefix
    latest = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": gateway.keys["SALES"]}, timeout=30,
                        json={"model": "claude-3-5-haiku-latest", "max_tokens": 20,
                              "messages": [{"role": "user", "content": "hi"}]})
    assert latest.status_code == 200 and latest.json()["model"] == "claude-3-5-haiku-latest"
    events = gateway.ledger_query(lambda ledger: ledger.list_events(limit=10))
    by_id = {event.id: event for event in events}
    for reply, entry in ((dated, "gpt-4o-mini"), (prefixed, "gpt-4o-mini"), (latest, "claude-3-5-haiku")):
        event = by_id[reply.headers["x-request-id"]]
        assert (event.model_requested, event.model_served) == (entry, entry)
        assert event.cost_nanos > 0


def test_an_id_that_names_no_entry_is_model_not_found(gateway: Gateway) -> None:
    for model in ("gpt-4o-20240806", "anthropic/gpt-4o", "gpt-7"):
        reply = chat(gateway, model)
        assert reply.status_code == 404, model
        assert reply.json()["error"]["code"] == "model_not_found"


def test_count_tokens_resolves_snapshots_aliases_and_prefixes(gateway: Gateway) -> None:
    client = gateway.track(anthropic.Anthropic(base_url=gateway.url, api_key=gateway.keys["SALES"], max_retries=0))
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    for model in ("claude-3-5-haiku-latest", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"):
        assert client.messages.count_tokens(model=model, messages=messages).input_tokens > 0, model
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-7", messages=messages)
    assert gateway.ledger_query(lambda ledger: ledger.count_events()) == 0  # counting is not charged


def test_a_model_is_retrieved_by_any_id_that_resolves_to_it(gateway: Gateway) -> None:
    client = gateway.track(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.keys["SUPPORT"], max_retries=0))
    for model in ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"):
        found = client.models.retrieve(model)
        assert (found.id, found.owned_by) == ("gpt-4o-mini", "openai"), model
    for model in ("gpt-7", "gpt-4o"):  # unknown, and not a model SUPPORT (tier 1) may use
        with pytest.raises(openai.NotFoundError) as refused:
            client.models.retrieve(model)
        assert refused.value.code == "model_not_found"
    claude = gateway.track(anthropic.Anthropic(base_url=gateway.url, api_key=gateway.keys["SUPPORT"], max_retries=0))
    assert claude.models.retrieve("claude-3-5-haiku-latest").id == "claude-3-5-haiku"
