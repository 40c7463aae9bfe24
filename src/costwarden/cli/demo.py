"""costwarden demo: everything embedded, on the machine's loopback interface.

Starts the mock upstream and the gateway (SQLite ledger, in-process counters), loads a seed-like
policy, creates a key per department and per business customer, sends a burst of synthetic
traffic that trips alerts, clamps, downgrades and refusals, runs the same agent-like conversations
for a Gold and a Silver customer, prints what happened (and what each customer paid per call),
and leaves the gateway running.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib.resources import files
from typing import Annotated

import typer
import uvicorn

from costwarden.app.settings import load_settings
from costwarden.cli.common import DbOption, console, fail, listen_or_fail, open_ledger, run
from costwarden.cli.traffic import (
    DemoKeys,
    Outcome,
    print_customers,
    print_guide,
    print_summary,
    send_traffic,
)
from costwarden.core.policy import Policy
from costwarden.http.app import create_app
from costwarden.mock_upstream import make_server
from costwarden.policy import parse_policy
from costwarden.reports.collect import period_bounds
from costwarden.reports.customers import customers, customers_report
from costwarden.reports.tabular import Report

DEMO_DEPARTMENTS = ("MARKETING", "ENGINEERING", "HR", "SALES", "SUPPORT", "PRODUCT")
DEMO_CUSTOMERS = ("ACME", "GLOBEX")  # Gold and Silver (SPEC §12)


def demo_policy_text(mock_url: str) -> str:
    """The bundled demo policy with its upstreams pointed at the mock."""
    return files("costwarden.data").joinpath("demo-policy.yaml").read_text().replace("{mock}", mock_url)


@contextmanager
def background(server: uvicorn.Server, name: str) -> Iterator[None]:
    """Run a uvicorn server in a thread until the block ends."""
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise fail(f"the {name} did not start (is its port already in use?)")
            time.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def demo(
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    mock_port: Annotated[int, typer.Option(help="Mock upstream port.")] = 8100,
    host: Annotated[str, typer.Option(help="Interface for both servers.")] = "127.0.0.1",
    calls: Annotated[int, typer.Option(help="Synthetic calls to send.")] = 240,
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop after the traffic instead of serving.")] = False,
    db: DbOption = None,
) -> None:
    """Run the gateway on embedded defaults with a mock upstream, a seed-like policy and traffic."""
    listen_or_fail(host, mock_port, "--mock-port")
    listen_or_fail(host, port)
    mock_url = f"http://{host}:{mock_port}"
    policy = parse_policy(demo_policy_text(mock_url), source="demo policy")
    os.environ.setdefault("COSTWARDEN_DEMO_UPSTREAM_KEY", "demo-upstream-key")
    settings = load_settings(policy_path=None, db_url=db, host=host, port=port)
    gateway_url = f"http://{host}:{port}"
    mock = make_server(host, mock_port)
    config = uvicorn.Config(create_app(settings, policy), host=host, port=port, loop="uvloop", http="httptools",
                            access_log=False, log_level="warning")
    gateway = uvicorn.Server(config)
    console.rule("costwarden demo")
    console.print(f"ledger: {settings.db_url}   mock upstream: {mock_url}   gateway: {gateway_url}")
    with background(mock, "mock upstream"), background(gateway, "gateway"):
        keys = run(lambda: _create_keys(settings.db_url, policy))
        admin_token = run(lambda: _create_admin_token(settings.db_url))
        outcomes = send_traffic(gateway_url, keys, calls)
        print_summary(outcomes)
        print_customers(run(lambda: _customers_report(settings.db_url, policy, outcomes)))
        print_guide(gateway_url, keys)
        console.print(f"\nDashboard: {gateway_url}/dashboard/ (sign in with this admin token: {admin_token})",
                      style="bold", soft_wrap=True)
        if exit_after:
            return
        console.print("\nThe gateway keeps running. Press Ctrl-C to stop.", style="bold")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")


async def _create_keys(db_url: str, policy: Policy) -> DemoKeys:
    ledger = await open_ledger(db_url)
    try:
        bound = {}
        for dept in DEMO_DEPARTMENTS:
            _, secret = await ledger.create_key(dept, name=f"demo {dept.lower()}")
            bound[dept] = secret
        devs = [(await ledger.create_key("ENGINEERING", user=f"dev{i}", name=f"demo developer {i}"))[1]
                for i in range(1, 5)]
        _, agent = await ledger.create_key("ENGINEERING", name="demo agent loop")
        _, desk = await ledger.create_key("SUPPORT", team="TIER1-DESK", name="demo tier-1 desk")
        _, unbound = await ledger.create_key(None, name="demo unbound")
        customers = {customer: (await ledger.create_key(policy.customers[customer].department, customer=customer,
                                                        name=f"demo {customer.lower()} agent"))[1]
                     for customer in DEMO_CUSTOMERS}
    finally:
        await ledger.close()
    return DemoKeys(bound, devs, agent, desk, unbound, customers, trial=bound["PRODUCT"])


async def _customers_report(db_url: str, policy: Policy, outcomes: list[Outcome]) -> Report:
    """The customers report of this month for the demo's customers, once the ledger holds every answered customer call
    (the gateway records a call just after answering it)."""
    answered = Counter(o.customer for o in outcomes if o.customer and o.status < 400)
    period = f"{datetime.now(policy.timezone):%Y-%m}"
    start, end = period_bounds(period, policy)
    ledger = await open_ledger(db_url)
    try:
        deadline = time.monotonic() + 15
        while True:
            lines = [line for line in await customers(ledger, policy, start, end) if line.id in DEMO_CUSTOMERS]
            if all(line.tally.requests >= answered[line.id] for line in lines) or time.monotonic() > deadline:
                return customers_report(lines, period, with_plans=False)
            await asyncio.sleep(0.1)
    finally:
        await ledger.close()


async def _create_admin_token(db_url: str) -> str:
    """An admin token for the dashboard (servers pick up new tokens within seconds)."""
    ledger = await open_ledger(db_url)
    try:
        _, secret = await ledger.create_token("admin", None, "demo dashboard")
    finally:
        await ledger.close()
    return secret
