"""The dashboard (SPEC section 11) in Debian's Chromium against a real gateway, with real traffic
to the mock upstream: what it shows equals the admin API to the cent, it follows live traffic, a
manager sees only their department, and a key made in the page works for a call."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from costwarden.core.money import format_dollars
from dashboard_fixtures import (
    SCREENSHOTS,
    WIDTHS,
    admin_get,
    admin_json,
    chat,
    chromium,
    nanos,
    sign_in,
    until,
    whole_percent,
)
from gateway_fixtures import Gateway, start_gateway
from servers import bound_socket
from service_fixtures import missing_service

pytestmark = pytest.mark.service
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "dashboard-admin-token-for-tests"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("dashboard"), mock_url, admin_token=ADMIN)


@pytest.fixture(scope="module")
def traffic(gw: Gateway) -> Gateway:
    """A month's worth of spend in a few calls (the mock reports the usage asked for): dollars in
    every department, an HR budget past its alert threshold, a downgrade and a runaway key stopped."""
    for key, calls, tokens in (("MARKETING", 3, 6_000_000), ("SALES", 1, 6_000_000), ("ENGINEERING", 1, 100_000),
                               ("HR", 1, 68_000_000), ("ENGINEERING-AGENT", 1, 20_000_000)):
        for _ in range(calls):
            reply = chat(gw.url, gw.keys[key], input_tokens=tokens)
            assert reply.status_code == 200, reply.text[:500]
    # The agent key's own $50/h budget is spent: its next call is refused.
    refused = chat(gw.url, gw.keys["ENGINEERING-AGENT"])
    assert refused.status_code == 429, refused.text[:500]
    # SALES may send 20,000 tokens a minute and has just sent millions.
    limited = chat(gw.url, gw.keys["SALES"])
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded", limited.text[:500]
    # SUPPORT may use tier 1 models only: gpt-4o is downgraded to gpt-4o-mini, at a cost of exactly
    # $0.045, which shows as $0.04 (half to even, as the gateway's reports round).
    downgraded = chat(gw.url, gw.keys["SUPPORT"], input_tokens=280_000, output_tokens=5_000)
    assert downgraded.headers.get("x-costwarden-downgraded-from") == "gpt-4o", downgraded.text[:500]
    return gw


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()




def expected_pie(gw: Gateway) -> str:
    """The contract of SPEC section 11, computed from GET /admin/v1/spend?group_by=department."""
    session = admin_json(gw.url, ADMIN, "/whoami")
    spend = admin_json(gw.url, ADMIN, "/spend", group_by="department", since=session["month_start"])
    names = {d["id"]: d["name"] for d in session["departments"]}
    rows = [(names[r["group"]["department"]], nanos(r["cost_usd"])) for r in spend["rows"] if nanos(r["cost_usd"]) > 0]
    total = sum(amount for _, amount in rows)
    rows.sort(key=lambda row: (-row[1], row[0]))
    return "Spend by department: " + ", ".join(
        f"{name} {format_dollars(amount)} ({whole_percent(amount, total)})" for name, amount in rows)


def test_page_loads_without_a_token_and_client_routes_answer_the_app(gw: Gateway) -> None:
    page = httpx.get(f"{gw.url}/dashboard/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{gw.url}/dashboard/finance").text == page.text
    assert httpx.get(f"{gw.url}/dashboard").status_code == 308
    script = httpx.get(f"{gw.url}/dashboard/assets/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["content-encoding"] == "gzip" and script.headers["cache-control"] == "no-cache"
    again = httpx.get(f"{gw.url}/dashboard/assets/app.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304  # browsers revalidate the fixed file names cheaply
    assert httpx.get(f"{gw.url}/dashboard/assets/missing.js").status_code == 404


def test_whoami_names_the_role_and_what_it_may_read(gw: Gateway) -> None:
    admin = admin_json(gw.url, ADMIN, "/whoami")
    assert (admin["role"], admin["token_id"], admin["sees_organization"], admin["manages_keys"]) == (
        "admin", "bootstrap", True, True)
    assert [(d["id"], d["name"]) for d in admin["departments"]][:3] == [
        ("ENGINEERING", "ENGINEERING"), ("HR", "HR"), ("MARKETING", "Marketing")]
    # The billing month in the policy's zone (America/New_York): it starts at local midnight.
    start = datetime.fromisoformat(admin["month_start"]).astimezone(ZoneInfo(admin["timezone"]))
    assert (start.day, start.hour, start.minute) == (1, 0, 0)
    assert admin["months"][0]["start"] == admin["month_start"] and len(admin["months"]) == 12
    assert admin["months"][1]["end"] == admin["months"][0]["start"]

    created = httpx.post(f"{gw.url}/admin/v1/tokens", headers={"Authorization": f"Bearer {ADMIN}"},
                         json={"role": "finance", "name": "controller"})
    finance = created.json()["token"]
    who = until(lambda: (r := admin_get(gw.url, finance, "/whoami")).status_code == 200 and r.json(),
                "the finance token to be known")
    assert (who["role"], who["manages_keys"], len(who["departments"])) == ("finance", False, 5)
    assert admin_get(gw.url, "not-a-token", "/whoami").status_code == 401


def test_sign_in_keeps_the_token_in_the_session_never_in_the_url(gw: Gateway, page: Any) -> None:
    page.goto(gw.url + "/dashboard/")
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="unknown or was revoked").wait_for()

    page.get_by_label("Token").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", level=1, name="AI spend").wait_for()  # the overview comes first
    assert page.url.endswith("/dashboard/overview") and ADMIN not in page.url
    assert page.evaluate("sessionStorage.getItem('costwarden.token')") == ADMIN
    assert page.evaluate("localStorage.length") == 0 and "costwarden" not in page.evaluate("document.cookie")

    page.reload()  # the session survives a reload of the tab
    page.get_by_role("heading", level=1, name="AI spend").wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Token").wait_for()
    assert page.evaluate("sessionStorage.getItem('costwarden.token')") is None


def test_pie_names_every_department_with_its_spend_to_the_cent(traffic: Gateway, page: Any) -> None:
    sign_in(page, traffic.url, ADMIN)
    pie = page.get_by_role("img", name=re.compile("^Spend by department"))
    expected = expected_pie(traffic)
    assert all(f"{name} $" in expected for name in ("Marketing", "ENGINEERING", "SALES", "HR"))
    assert "SUPPORT $0.04 (<1%)" in expected
    until(lambda: pie.get_attribute("aria-label") == expected, f"the pie to read {expected!r}")

    before = expected
    reply = chat(traffic.url, traffic.keys["MARKETING"])  # the pie follows new spend within a few polls
    assert reply.status_code == 200, reply.text[:500]
    expected = expected_pie(traffic)
    assert expected != before
    until(lambda: pie.get_attribute("aria-label") == expected, f"the pie to read {expected!r}")


def test_budget_bar_moves_after_calls(traffic: Gateway, page: Any) -> None:
    sign_in(page, traffic.url, ADMIN, "/dashboard/department/HR")
    bar = page.get_by_role("progressbar", name="HR monthly budget")
    bar.wait_for()
    before = bar.get_attribute("data-spent")
    for _ in range(2):
        reply = chat(traffic.url, traffic.keys["HR"])
        assert reply.status_code == 200, reply.text[:500]
    budget = next(b for b in admin_json(traffic.url, ADMIN, "/budgets", department="HR")["budgets"]
                  if b["scope_kind"] == "department")
    assert nanos(budget["spent_usd"]) > nanos(before or "0")
    until(lambda: bar.get_attribute("data-spent") == budget["spent_usd"], "the HR budget bar to move")
    text = bar.get_attribute("aria-valuetext") or ""
    assert text.startswith(f"{format_dollars(nanos(budget['spent_usd']))} spent of $200.00")


def test_manager_sees_only_their_department_and_the_api_refuses_the_rest(traffic: Gateway, page: Any) -> None:
    created = httpx.post(f"{traffic.url}/admin/v1/tokens", headers={"Authorization": f"Bearer {ADMIN}"},
                         json={"role": "manager", "department": "MARKETING", "name": "marketing lead"})
    assert created.status_code == 201, created.text
    manager = created.json()["token"]
    until(lambda: admin_get(traffic.url, manager, "/whoami").status_code == 200, "the new token to be known")

    who = admin_json(traffic.url, manager, "/whoami")
    assert (who["role"], who["department"], [d["id"] for d in who["departments"]]) == (
        "manager", "MARKETING", ["MARKETING"])
    sign_in(page, traffic.url, manager)
    page.get_by_role("heading", level=1, name="Marketing").wait_for()  # a manager starts on their department
    nav = page.get_by_role("navigation", name="Pages")
    assert nav.get_by_role("link").all_inner_texts() == ["Marketing", "Alerts", "Audit"]
    assert page.get_by_label("Department", exact=True).count() == 0  # no department picker
    page.goto(traffic.url + "/dashboard/department/HR")  # another department's page: back to their own
    page.get_by_role("heading", level=1, name="Marketing").wait_for()
    page.goto(traffic.url + "/dashboard/overview")
    page.get_by_role("heading", level=1, name="Marketing").wait_for()
    keys = page.get_by_role("table", name="Active keys of Marketing")
    keys.wait_for()
    assert "test ENGINEERING" not in keys.inner_text() and "test MARKETING" in keys.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "department-manager-desktop.png"), full_page=True)

    for path, params in (("/spend", {"department": "HR"}), ("/budgets", {"department": "ENGINEERING"}),
                         ("/keys", {"department": "SALES"}), ("/events", {"department": "HR"}),
                         ("/tokens", {})):
        assert admin_get(traffic.url, manager, path, **params).status_code == 403, path
    visible = admin_json(traffic.url, manager, "/spend", group_by="department")
    assert {row["group"]["department"] for row in visible["rows"]} == {"MARKETING"}


def test_key_created_in_the_page_works_for_a_call_and_revoking_it_stops_it(traffic: Gateway, page: Any) -> None:
    sign_in(page, traffic.url, ADMIN, "/dashboard/department/MARKETING")
    page.get_by_label("Key name").fill("campaign assistant")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key-secret").inner_text()
    assert secret.startswith("cw-")
    page.get_by_role("button", name="Done").click()
    assert page.get_by_test_id("new-key-secret").count() == 0  # shown once

    reply = until(lambda: (r := chat(traffic.url, secret, "gpt-4o-mini")).status_code == 200 and r,
                  "the new key to work")
    assert reply.headers["x-costwarden-department"] == "MARKETING"

    page.get_by_role("button", name="Revoke campaign assistant").click()
    page.get_by_role("button", name="Confirm revoking campaign assistant").click()
    page.get_by_role("button", name="Revoke campaign assistant").wait_for(state="detached")
    until(lambda: chat(traffic.url, secret, "gpt-4o-mini").status_code == 401, "the revoked key to be refused")


def test_the_audit_page_lists_that_keys_creation_with_its_creator(traffic: Gateway, browser: Any) -> None:
    created = httpx.post(f"{traffic.url}/admin/v1/tokens", headers={"Authorization": f"Bearer {ADMIN}"},
                         json={"role": "manager", "department": "MARKETING", "name": "audit lead"})
    assert created.status_code == 201, created.text
    manager_id, manager = created.json()["id"], created.json()["token"]
    until(lambda: admin_get(traffic.url, manager, "/whoami").status_code == 200, "the new token to be known")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        sign_in(tab, traffic.url, manager)
        tab.get_by_label("Key name").fill("audit probe")
        tab.get_by_role("button", name="Create key").click()
        tab.get_by_test_id("new-key-secret").wait_for()
        key = next(k for k in admin_json(traffic.url, ADMIN, "/keys", department="MARKETING")["keys"]
                   if k["name"] == "audit probe")
        # The manager's own audit page: its department's changes only.
        tab.get_by_role("navigation", name="Pages").get_by_role("link", name="Audit").click()
        mine = tab.get_by_role("region", name="Changes, newest first")
        mine.get_by_role("row").filter(has_text=key["id"]).wait_for()
        assert "HR" not in {cell.strip() for cell in mine.get_by_role("cell").all_inner_texts()}
    finally:
        context.close()

    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    try:
        sign_in(page, traffic.url, ADMIN, "/dashboard/audit")
        row = page.get_by_role("region", name="Changes, newest first").get_by_role("row").filter(has_text=key["id"])
        row.wait_for()
        cells = row.get_by_role("rowheader").all_inner_texts() + row.get_by_role("cell").all_inner_texts()
        assert cells[1] == "Key created" and cells[3:5] == [f"Manager {manager_id}", "Marketing"], cells
        assert cells[2].startswith("audit probe (") and key["id"] in cells[2]
        # The filter keeps one kind of change: token creations list the manager's token, not the key.
        page.get_by_label("Kind of change").select_option("token.created")
        page.get_by_role("row").filter(has_text=manager_id).filter(has_text="Token created").wait_for()
        until(lambda: page.get_by_role("row").filter(has_text=key["id"]).count() == 0, "the key to be filtered out")
        expected = admin_json(traffic.url, ADMIN, "/audit", action="token.created")["entries"]
        assert page.get_by_role("region", name="Changes, newest first").get_by_role("row").count() == len(expected) + 1
    finally:
        page.context.close()


def test_finance_downloads_the_period_spend_as_csv(traffic: Gateway, page: Any) -> None:
    sign_in(page, traffic.url, ADMIN, "/dashboard/finance")
    button = page.get_by_role("button", name="Download spend by department (CSV)")
    until(lambda: button.is_enabled(), "the period's spend to load")
    with page.expect_download() as download:
        button.click()
    rows = list(csv.DictReader(Path(download.value.path()).read_text().splitlines()))
    session = admin_json(traffic.url, ADMIN, "/whoami")
    spend = admin_json(traffic.url, ADMIN, "/spend", group_by="department", since=session["months"][0]["start"],
                       until=session["months"][0]["end"])
    assert {r["department_id"]: r["cost_usd"] for r in rows} == {
        r["group"]["department"]: r["cost_usd"] for r in spend["rows"]}
    assert {r["period"] for r in rows} == {session["months"][0]["period"]}
    assert next(r for r in rows if r["department_id"] == "MARKETING")["department_name"] == "Marketing"

    # The chargeback statement's own download, as the admin API serves it.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV", exact=True).click()
    period = session["months"][0]["period"]
    statement = admin_get(traffic.url, ADMIN, "/chargeback", period=period, format="csv")
    assert statement.status_code == 200, statement.text[:500]
    assert Path(download.value.path()).read_bytes() == statement.content
    assert download.value.suggested_filename == f"chargeback-{period}.csv"


def test_screenshots_of_every_page(traffic: Gateway, browser: Any) -> None:
    """Written to docs/screenshots (the README shows the overview); each page must render its data."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = [("overview", "/dashboard/overview", "Spend by department"),
             ("department", "/dashboard/department/MARKETING", "Budgets"),
             ("finance", "/dashboard/finance", "Spend by department"),
             ("alerts", "/dashboard/alerts", "Refused calls"),
             ("audit", "/dashboard/audit", "Changes")]
    for label, (width, height) in WIDTHS.items():
        context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
        try:
            tab = context.new_page()
            tab.goto(traffic.url + "/dashboard/")
            tab.get_by_label("Token").wait_for()
            shoot(tab, f"signin-{label}")
            sign_in(tab, traffic.url, ADMIN)
            for name, path, heading in pages:
                tab.goto(traffic.url + path)
                tab.get_by_role("heading", level=2, name=heading).first.wait_for()
                tab.locator(".loading").first.wait_for(state="detached")
                shoot(tab, f"{name}-{label}")
        finally:
            context.close()
    for name in ("signin", "overview", "department", "finance", "alerts", "audit"):
        for label in WIDTHS:
            assert (SCREENSHOTS / f"{name}-{label}.png").stat().st_size > 10_000


def shoot(tab: Any, name: str) -> None:
    # Charts draw once their container has a size: wait for the pie's slices where there is a pie.
    if tab.locator("[data-testid=department-pie]").count():
        tab.locator("[data-testid=department-pie] path.recharts-sector").first.wait_for()
    tab.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True, animations="disabled")


def test_demo_prints_the_dashboard_and_an_admin_token_that_signs_in(tmp_path: Path) -> None:
    ports = []
    for _ in range(2):
        sock = bound_socket()
        ports.append(sock.getsockname()[1])
        sock.close()
    demo = subprocess.Popen([sys.executable, "-m", "costwarden", "demo", "--calls", "40", "--port", str(ports[0]),
                             "--mock-port", str(ports[1])], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        found = None
        for line in demo.stdout:  # ends when the demo exits; it keeps serving once it has printed this
            found = re.search(r"Dashboard: (\S+) \(sign in with this admin token: (\S+)\)", line)
            if found:
                break
        assert found, "the demo printed no dashboard line"
        url, token = found[1], found[2]
        assert httpx.get(url).status_code == 200
        who = until(lambda: (r := httpx.get(url.replace("/dashboard/", "/admin/v1/whoami"),
                                            headers={"Authorization": f"Bearer {token}"})).status_code == 200
                    and r.json(), "the demo's admin token to sign in")
        assert who["role"] == "admin"
        spend = admin_json(url.replace("/dashboard/", ""), token, "/spend", group_by="department")
        assert nanos(spend["totals"]["cost_usd"]) > 0  # its traffic is there to see
    finally:
        demo.terminate()
        demo.wait(timeout=30)
        if demo.stdout is not None:
            demo.stdout.close()


def test_committed_build_matches_its_sources(tmp_path: Path) -> None:
    """The assets in the package are what ``npm ci && npm run build`` makes of dashboard/ now: a
    change to the sources without a rebuild (scripts/build-dashboard) fails here."""
    npm = shutil.which("npm")
    if npm is None:
        missing_service("npm (Node.js 20)")
    work = tmp_path / "dashboard"
    shutil.copytree(ROOT / "dashboard", work, ignore=shutil.ignore_patterns("node_modules"))
    out = tmp_path / "static"
    env = {**os.environ, "COSTWARDEN_DASHBOARD_OUT": str(out)}
    for command in ([npm, "ci", "--no-audit", "--no-fund"], [npm, "run", "build"]):
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    built, committed = _digests(out), _digests(ROOT / "src" / "costwarden" / "dashboard" / "static")
    stale = sorted(name for name in built.keys() | committed.keys() if built.get(name) != committed.get(name))
    assert not stale, f"src/costwarden/dashboard/static is not the build of dashboard/: {stale}; run scripts/build-dashboard"


def _digests(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}
