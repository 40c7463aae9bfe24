"""Business customers through a running gateway (SPEC §12): a customer's key is attributed to the
customer and charged to its department, the customer scope's hard budget refuses, the invoice
over the admin API equals the ledger's usage x the rate card to the cent, and a customer token
reads only its own customer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.core.events import UsageEvent
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, Gateway, policy_text, start_gateway

ADMIN = "bootstrap-admin-secret"
# Card prices far above the provider's so that a few mock calls come to whole cents.
POLICY = UPSTREAMS + """
departments:
  PRODUCT: {}
""" + PLAIN_DEPARTMENTS + """
plans:
  silver:
    rate_card: {markup_pct: 20}
    budgets: [{limit: 0.00001, period: monthly, action: reject}]
  gold:
    priority: high
    rate_card: {markup_pct: 35, models: {gpt-4o-mini: {input: 3000, output: 12000}}}
    included_usd: 0.05
customers:
  ACME:   {name: Acme Corp, plan: gold,   department: PRODUCT}
  GLOBEX: {name: Globex,    plan: silver, department: PRODUCT}
"""
runner = CliRunner()


@pytest.fixture
def gw(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    # The customers' keys exist before the server starts, as issued by an admin with the CLI.
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_text(mock_url, POLICY))
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    keys = {customer.upper(): cli("keys", "create", "--customer", customer, "--json", "--db", db_url,
                                  "--policy", str(policy_file))
            for customer in ("acme", "globex")}
    assert keys["ACME"]["department"] == "PRODUCT" and keys["ACME"]["customer"] == "ACME"
    for gateway in start_gateway(tmp_path, mock_url, POLICY, admin_token=ADMIN, db_url=db_url):
        gateway.keys.update({customer: created["key"] for customer, created in keys.items()})
        gateway.keys["policy"] = str(policy_file)
        yield gateway


def cli(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.output)
    return answer


def chat(gw: Gateway, key: str, **headers: str) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hello there #mock output_tokens=20"}]}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


def api(gw: Gateway, path: str, token: str = ADMIN, **params: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/admin/v1{path}", params=params, timeout=30,
                     headers={"Authorization": f"Bearer {token}"})


def events(gw: Gateway) -> list[UsageEvent]:
    found: list[UsageEvent] = gw.ledger_query(lambda ledger: ledger.list_events(limit=1000))
    return found


def period() -> str:
    return f"{datetime.now(UTC):%Y-%m}"


def test_a_customer_key_is_attributed_to_the_customer_and_charged_to_its_department(gw: Gateway) -> None:
    answer = chat(gw, gw.keys["ACME"])
    assert answer.status_code == 200, answer.text
    plain = chat(gw, gw.keys["SALES"])
    assert plain.status_code == 200, plain.text
    by_department = {e.department: e for e in events(gw)}
    assert by_department["PRODUCT"].customer == "ACME" and by_department["PRODUCT"].cost_nanos > 0
    assert by_department["SALES"].customer == ""
    mismatch = chat(gw, gw.keys["ACME"], **{"X-Department-ID": "SALES"})
    assert mismatch.status_code == 403, mismatch.text


def test_the_customer_scope_hard_budget_refuses(gw: Gateway) -> None:
    refused = chat(gw, gw.keys["GLOBEX"])
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "GLOBEX" in refused.json()["error"]["message"]
    # the department itself has room: a call of the same department without the customer is served
    assert chat(gw, gw.unbound, **{"X-Department-ID": "PRODUCT"}).status_code == 200
    assert [e.customer for e in events(gw)] == [""]
    budgets = api(gw, "/budgets").json()["budgets"]
    assert [(b["scope"], b["scope_kind"], b["department"]) for b in budgets if b["scope_kind"] == "customer"] == [
        ("customer:GLOBEX", "customer", "PRODUCT")]


def test_the_invoice_is_usage_times_the_rate_card_to_the_cent(gw: Gateway) -> None:
    for _ in range(3):
        assert chat(gw, gw.keys["ACME"]).status_code == 200
    acme_events = [e for e in events(gw) if e.customer == "ACME"]
    assert len(acme_events) == 3
    # gpt-4o-mini on the gold card: every input token at $3000 / 1M (no cache price on the card),
    # output at $12000 / 1M; the first $0.05 is included
    usage = sum((Decimal(e.input_tokens) * 3000 + Decimal(e.output_tokens) * 12000 for e in acme_events),
                Decimal(0)) / 1_000_000
    billable = usage - Decimal("0.05")
    assert billable > 0
    answer = api(gw, "/customers", period=period())
    assert answer.status_code == 200, answer.text
    rows = {(r["level"], r["customer"] or r["plan"]): r for r in answer.json()["rows"]}
    acme = rows[("customer", "ACME")]
    assert Decimal(acme["usage_at_rate_card_usd"]) == usage
    assert Decimal(acme["included_usd"]) == Decimal("0.05")
    assert Decimal(acme["billable_usd"]) == billable
    assert acme["invoice_usd"] == str(billable.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    assert acme["cost_usd"] == str(Decimal(sum(e.cost_nanos for e in acme_events)).scaleb(-9).normalize())
    assert acme["requests"] == 3 and acme["plan"] == "gold" and acme["latency_p95_ms"] is not None
    assert rows[("customer", "GLOBEX")]["requests"] == 0 and ("plan", "gold") in rows
    csv_answer = api(gw, "/customers", period=period(), format="csv")
    assert csv_answer.status_code == 200 and acme["invoice_usd"] in csv_answer.text
    report = runner.invoke(app, ["report", "customers", "--period", period(), "--format", "json",
                                 "--db", gw.db_url, "--policy", gw.keys["policy"]])
    assert report.exit_code == 0, report.output
    cli_rows = {(r["level"], r["customer"] or r["plan"]): r for r in json.loads(report.output)["rows"]}
    assert cli_rows[("customer", "ACME")] == acme


def test_a_customer_token_reads_only_its_own_customer(gw: Gateway) -> None:
    assert chat(gw, gw.keys["ACME"]).status_code == 200
    token = cli("tokens", "create", "--role", "customer", "--customer", "acme", "--json", "--db", gw.db_url,
                "--policy", gw.keys["policy"])["token"]
    deadline = time.monotonic() + 10
    while (own := api(gw, "/customers/ACME", token, period=period())).status_code == 401:
        assert time.monotonic() < deadline, "token not accepted within 10 s"
        time.sleep(0.05)
    assert own.status_code == 200, own.text
    assert [(r["level"], r["customer"]) for r in own.json()["rows"]] == [("customer", "ACME")]
    mine = api(gw, "/customers", token, period=period())
    assert [(r["level"], r["customer"]) for r in mine.json()["rows"]] == [("customer", "ACME")]
    for path, params in (("/customers/GLOBEX", {}), ("/customers", {"customer": "GLOBEX"})):
        other = api(gw, path, token, period=period(), **params)
        assert other.status_code == 403, other.text
        assert "GLOBEX" in other.json()["error"]["message"]
    assert api(gw, "/chargeback", token, period=period()).status_code == 403
    assert api(gw, "/keys", token).status_code == 403



def test_a_manager_reads_the_customers_of_its_department_only(gw: Gateway) -> None:
    created = httpx.post(f"{gw.url}/admin/v1/tokens", json={"role": "manager", "department": "SALES"},
                         headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    deadline = time.monotonic() + 10
    while (listed := api(gw, "/customers", token, period=period())).status_code == 401:
        assert time.monotonic() < deadline, "token not accepted within 10 s"
        time.sleep(0.05)
    assert listed.status_code == 200 and listed.json()["rows"] == []
    assert api(gw, "/customers/ACME", token, period=period()).status_code == 403


def once_known(send: Callable[[], httpx.Response]) -> httpx.Response:
    """The answer once the gateway knows a new credential (they reach it within seconds; the
    5-second promise itself is tested in test_admin_api.py, this waits longer for a loaded machine)."""
    deadline = time.monotonic() + 15.0
    while (answer := send()).status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling interval, not synchronization
    return answer


def test_the_admin_api_creates_customer_keys_and_tokens(gw: Gateway) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = httpx.post(f"{gw.url}/admin/v1/keys", json={"customer": "ACME", "name": "acme app"}, headers=admin,
                      timeout=30)
    assert made.status_code == 201, made.text
    key = made.json()
    assert (key["customer"], key["department"]) == ("ACME", "PRODUCT")
    answer = once_known(lambda: chat(gw, key["key"]))
    assert answer.status_code == 200, answer.text
    assert [e.customer for e in events(gw) if e.key_id == key["id"]] == ["ACME"]
    token = httpx.post(f"{gw.url}/admin/v1/tokens", json={"role": "customer", "customer": "ACME"}, headers=admin,
                       timeout=30)
    assert token.status_code == 201, token.text
    assert once_known(lambda: api(gw, "/customers/ACME", token=token.json()["token"])).status_code == 200
    assert api(gw, "/customers/GLOBEX", token=token.json()["token"]).status_code == 403
    wrong = httpx.post(f"{gw.url}/admin/v1/keys", json={"customer": "NOPE"}, headers=admin, timeout=30)
    assert wrong.status_code == 400 and "NOPE" in wrong.json()["error"]["message"]
    no_customer = httpx.post(f"{gw.url}/admin/v1/tokens", json={"role": "customer"}, headers=admin, timeout=30)
    assert no_customer.status_code == 400
