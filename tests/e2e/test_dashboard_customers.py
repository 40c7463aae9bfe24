"""The dashboard's customers page (SPEC sections 11 and 12) in Debian's Chromium against a real
gateway, with the same agent-like calls from a Gold and a Silver customer through the mock
upstream (which caches marked prompts): an admin sees both customers with the admin API's amounts
to the cent, and a customer token sees only its own customer while the API refuses the other."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costwarden.ledger import Ledger
from dashboard_fixtures import SCREENSHOTS, WIDTHS, admin_get, admin_json, chromium, sign_in, until
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, Gateway, start_gateway

pytestmark = pytest.mark.service
ADMIN = "dashboard-customers-admin-token"
POLICY = UPSTREAMS + """
departments:
  PRODUCT: {name: Product}
  HR: {}
""" + PLAIN_DEPARTMENTS + """
plans:
  silver:
    priority: standard
    rate_card: {markup_pct: 20}
  gold:
    priority: high
    efficiency:
      prompt_caching: auto
      thin_context: {max_input_tokens: 32000}
    rate_card: {markup_pct: 35}
    included_usd: 0.01
customers:
  ACME:   {name: Acme Corp, plan: gold,   department: PRODUCT}
  GLOBEX: {name: Globex,    plan: silver, department: PRODUCT}
"""
SYSTEM = ("You are the billing assistant of Initech Cloud. Explain every charge in plain words and never "
          "promise refunds. ") * 80  # above the model's minimum cacheable length




def customer_keys(db_url: str) -> dict[str, str]:
    """A key of each customer and an ACME customer token (ACME-TOKEN), issued before the server
    starts as an admin does with the CLI (the browser's event loop later rules out asyncio.run)."""
    async def work() -> dict[str, str]:
        ledger = await Ledger.open(db_url)
        try:
            keys = {customer: (await ledger.create_key("PRODUCT", name=f"{customer} agent", customer=customer))[1]
                    for customer in ("ACME", "GLOBEX")}
            keys["ACME-TOKEN"] = (await ledger.create_token("customer", None, "acme portal", customer="ACME"))[1]
            return keys
        finally:
            await ledger.close()

    return asyncio.run(work())


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock_url: str) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("customers")
    db_url = f"sqlite:///{tmp}/ledger.db"
    keys = customer_keys(db_url)
    for gateway in start_gateway(tmp, mock_url, POLICY, admin_token=ADMIN, db_url=db_url):
        gateway.keys.update(keys)
        yield gateway


@pytest.fixture(scope="module")
def traffic(gw: Gateway) -> Gateway:
    """The same two conversations of three turns for each customer, on an Anthropic model."""
    for number in range(2):
        messages: list[dict[str, Any]] = []
        for turn in range(3):
            messages.append({"role": "user", "content": f"Conversation {number}, question {turn}: what is charge "
                                                        f"{turn} on my invoice?\n#mock output_tokens=120"})
            for customer in ("ACME", "GLOBEX"):
                reply = httpx.post(f"{gw.url}/v1/messages", timeout=30, headers={"x-api-key": gw.keys[customer]},
                                   json={"model": "claude-sonnet-4-5", "max_tokens": 300, "system": SYSTEM,
                                         "messages": list(messages)})
                assert reply.status_code == 200, reply.text[:500]
            messages.append({"role": "assistant", "content": f"Charge {turn} is object storage, billed monthly."})
    return gw


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def cent(usd: str) -> str:
    """The page's rendering of an exact amount: dollars, half up to the cent (the invoice's rounding)."""
    return f"${Decimal(usd).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def customer_rows(gw: Gateway, token: str, path: str = "/customers") -> dict[str, dict[str, Any]]:
    session = admin_json(gw.url, token, "/whoami")
    report = admin_json(gw.url, token, path, period=session["months"][0]["period"])
    return {row["customer"]: row for row in report["rows"] if row["level"] == "customer"}


def figures(page: Any, title: str) -> dict[str, str]:
    """A customer card's label -> value pairs, as shown."""
    card = page.get_by_role("region", name=title)
    labels = card.locator("dt").all_inner_texts()
    values = card.locator("dd").all_inner_texts()
    return dict(zip(labels, values, strict=True))


def test_admin_sees_both_customers_with_the_api_amounts_to_the_cent(traffic: Gateway, browser: Any) -> None:
    rows = until(lambda: (r := customer_rows(traffic, ADMIN)) and all(
        r[c]["requests"] == 6 for c in ("ACME", "GLOBEX")) and r, "every call in the customers report")
    gold, silver = rows["ACME"], rows["GLOBEX"]
    # the Gold customer's prompt was cached: it costs less for the same calls, and is shown so
    assert gold["cache_read_tokens"] > 0 and silver["cache_read_tokens"] == 0
    assert Decimal(gold["cost_usd"]) < Decimal(silver["cost_usd"]) and Decimal(gold["saved_usd"]) > 0
    assert Decimal(gold["included_usd"]) == Decimal("0.01")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, traffic.url, ADMIN, "/dashboard/customers")
        page.get_by_role("heading", name="Customers", exact=True).wait_for()
        for title, row in (("Acme Corp — Gold", gold), ("Globex — Silver", silver)):
            shown = until(lambda t=title: figures(page, t) if page.get_by_role("region", name=t).count() else None,
                          f"the card {title}")
            assert shown["Calls"] == "6"
            assert shown["Cost at provider prices"] == cent(row["cost_usd"])
            assert shown["Usage at rate card"] == cent(row["usage_at_rate_card_usd"])
            assert shown["Included in plan"] == cent(row["included_usd"])
            assert shown["Billable"] == cent(row["billable_usd"])
            assert shown["Invoice"] == cent(row["invoice_usd"])
            assert shown["Saved by the plan"] == cent(row["saved_usd"])
        invoices = page.get_by_role("region", name="Customers' usage and invoices")
        assert invoices.get_by_role("row").count() == 3  # the header and both customers
        efficiency = page.get_by_role("region", name="Customers' efficiency")
        acme = efficiency.get_by_role("row", name="Acme Corp (ACME)").inner_text()
        assert f"{gold['cache_read_tokens']:,}" in acme and f"{gold['cache_write_tokens']:,}" in acme
        page.screenshot(path=str(Path(SCREENSHOTS) / "customers-desktop.png"), full_page=True, animations="disabled")
        page.set_viewport_size(dict(zip(("width", "height"), WIDTHS["phone"], strict=True)))
        page.screenshot(path=str(Path(SCREENSHOTS) / "customers-phone.png"), full_page=True, animations="disabled")
    finally:
        context.close()


def test_a_customer_token_sees_only_its_own_customer(traffic: Gateway, browser: Any) -> None:
    token = traffic.keys["ACME-TOKEN"]
    who = until(lambda: (r := admin_get(traffic.url, token, "/whoami")).status_code == 200 and r.json(),
                "the new token to be known")
    assert (who["role"], who["customer"], who["sees_organization"]) == ("customer", "ACME", False)
    own = until(lambda: (r := customer_rows(traffic, token, "/customers/ACME")) and r["ACME"]["requests"] == 6 and r,
                "ACME's calls")
    assert set(own) == {"ACME"}
    assert set(customer_rows(traffic, token)) == {"ACME"}  # the list too holds only its own
    assert admin_get(traffic.url, token, "/customers/GLOBEX").status_code == 403
    assert admin_get(traffic.url, token, "/customers", customer="GLOBEX").status_code == 403
    assert admin_get(traffic.url, token, "/spend").status_code == 403
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, traffic.url, token)  # from the start page, straight to its own customer
        page.get_by_role("heading", name="Acme Corp: usage and invoice").wait_for()
        assert page.url.endswith("/dashboard/customers")
        shown = until(lambda: figures(page, "Acme Corp — Gold") if page.get_by_role(
            "region", name="Acme Corp — Gold").count() else None, "ACME's card")
        assert shown["Invoice"] == cent(own["ACME"]["invoice_usd"])
        assert "Globex" not in page.locator("main").inner_text()
        assert page.get_by_role("link", name="Overview").count() == 0
        page.goto(f"{traffic.url}/dashboard/overview")  # another page's address leads back to its own
        page.get_by_role("heading", name="Acme Corp: usage and invoice").wait_for()
    finally:
        context.close()
