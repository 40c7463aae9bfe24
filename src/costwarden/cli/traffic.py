"""The demo's synthetic traffic: a scripted mix of calls, and what came of them."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from costwarden.cli.common import console, fail
from costwarden.reports.tabular import Report


@dataclass(frozen=True, slots=True)
class DemoKeys:
    bound: dict[str, str]
    developers: list[str]  # ENGINEERING spreads its work over several keys, each under the breaker
    agent: str
    desk: str
    unbound: str
    customers: dict[str, str]  # customer id -> a key bound to that business customer
    trial: str  # a PRODUCT key no traffic uses, with room left for the reader's first calls


@dataclass(frozen=True, slots=True)
class Planned:
    department: str
    key: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    customer: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    department: str
    status: int
    cost: Decimal
    downgraded: bool
    clamped: bool
    code: str
    customer: str = ""


def _chat(model: str, text: str, output: int, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"{text}\n#mock output_tokens={output}"}],
                            "max_tokens": 8000}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def plan_traffic(keys: DemoKeys, calls: int) -> list[Planned]:
    """A repeatable mix: each department's behaviour shows within the first few dozen calls.

    MARKETING passes 80% of its soft budget; ENGINEERING's developers pass the $0.40 that
    restricts it to tier 1 (gpt-4o is then served as gpt-4o-mini) while its agent loop trips the
    per-key breaker; HR is clamped then refused; SALES bursts past 30 requests per minute;
    SUPPORT asks for tier-3 models and gets tier 1, is refused a Claude model (its downgrade is
    not on SUPPORT's model list), and its tier-1 desk exhausts its team budget.
    """
    k = keys.bound
    script = [
        Planned("MARKETING", k["MARKETING"], "/v1/chat/completions", _chat("gpt-4o", "Write a product launch post.", 2500), {}),
        Planned("ENGINEERING", "", "/v1/chat/completions", _chat("gpt-4o", "Review this diff.", 1500), {}),
        Planned("ENGINEERING", keys.agent, "/v1/chat/completions", _chat("gpt-4o-mini", "Agent step: plan next action.", 16000), {}),
        Planned("HR", k["HR"], "/v1/chat/completions", _chat("gpt-4o-mini", "Summarize this policy.", 7000), {}),
        Planned("SALES", k["SALES"], "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [
            {"role": "user", "content": "Draft a personal note to the customer.\n#mock output_tokens=600"}]}, {}),
        Planned("SALES", k["SALES"], "/v1/chat/completions", _chat("gpt-4o", "Qualify this lead.", 400, stream=True), {}),
        Planned("SUPPORT", k["SUPPORT"], "/v1/chat/completions", _chat("gpt-4o", "Answer: how do I reset my password?", 300), {}),
        Planned("SUPPORT", keys.desk, "/v1/chat/completions", _chat("gpt-4o-mini", "Tier-1 ticket reply.", 4000), {}),
        Planned("SUPPORT", k["SUPPORT"], "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["faq entry"] * 8}, {}),
        Planned("MARKETING", keys.unbound, "/v1/chat/completions", _chat("gpt-4o-mini", "Tagline ideas.", 200),
                {"X-Department-ID": "MARKETING", "X-Tags": "project=launch,feature=copy"}),
        Planned("SUPPORT", k["SUPPORT"], "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [
            {"role": "user", "content": "Escalation summary for a VIP.\n#mock output_tokens=200"}]}, {}),
    ]
    rounds = -(-calls // len(script))
    planned = []
    for i in range(calls):
        step = script[i % len(script)]
        if not step.key:  # the developers take turns, so that no single key trips the breaker
            step = Planned(step.department, keys.developers[(i // len(script)) * len(keys.developers) // rounds],
                           step.path, step.body, step.headers)
        planned.append(step)
    return planned


# The agent-like workload of the business customers (SPEC §12): the same long system prompt and the
# same conversations for the Gold and the Silver customer, so that their cost per call compares.
AGENT_MODEL = "claude-sonnet-4-5"
AGENT_SYSTEM = ("You are the billing assistant of Initech Cloud. Identify the customer's account, check recent "
                "invoices and usage, explain every charge in plain words, never promise refunds, and hand "
                "anything about security to a human. ") * 40  # about 2,000 tokens: above the cacheable minimum
AGENT_ANSWER_TOKENS = 150


def _question(conversation: int, turn: int) -> str:
    return (f"Conversation {conversation}, question {turn}: invoice INV-{1000 + conversation}-{turn} shows a storage "
            f"charge in region eu-{turn} that I do not recognise. What is it?\n#mock output_tokens={AGENT_ANSWER_TOKENS}")


def _answer(conversation: int, turn: int) -> str:
    return (f"Invoice INV-{1000 + conversation}-{turn}: the charge is object storage in eu-{turn}, billed per "
            f"GB-month; it grew because snapshots were kept for 30 days instead of 7.")


def plan_agents(customers: dict[str, str], conversations: int = 3, turns: int = 4) -> list[Planned]:
    """Multi-turn conversations on an Anthropic model, each call sending the system prompt and the
    whole conversation so far; every customer runs the same ones, turn by turn side by side."""
    planned = []
    for number in range(conversations):
        messages: list[dict[str, Any]] = []
        for turn in range(turns):
            messages.append({"role": "user", "content": _question(number, turn)})
            for customer, key in customers.items():
                body = {"model": AGENT_MODEL, "max_tokens": 400, "system": AGENT_SYSTEM, "messages": list(messages)}
                planned.append(Planned("PRODUCT", key, "/v1/messages", body, {}, customer))
            messages.append({"role": "assistant", "content": _answer(number, turn)})
    return planned


def _wait_for_key(client: httpx.Client, key: str) -> None:
    """New keys reach the running gateway within seconds; wait for that rather than guess."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200:
            return
        time.sleep(0.2)
    raise fail("the gateway did not accept the demo keys within 15 s")


def send_traffic(gateway_url: str, keys: DemoKeys, calls: int) -> list[Outcome]:
    outcomes = []
    with httpx.Client(base_url=gateway_url, timeout=60) as client, Progress(console=console) as progress:
        _wait_for_key(client, keys.bound["SALES"])
        script = plan_traffic(keys, calls) + plan_agents(keys.customers)
        task = progress.add_task("sending synthetic traffic", total=len(script))
        for planned in script:
            headers = {"Authorization": f"Bearer {planned.key}", **planned.headers}
            reply = client.post(planned.path, json=planned.body, headers=headers)
            code = ""
            if reply.status_code >= 400:
                error = reply.json().get("error", {})
                code = error.get("code") or error.get("type") or ""
            outcomes.append(Outcome(planned.department, reply.status_code, settled_cost(reply),
                                    "x-costwarden-downgraded-from" in reply.headers,
                                    "x-costwarden-max-tokens-clamped" in reply.headers, code, planned.customer))
            progress.advance(task)
    return outcomes


def settled_cost(reply: httpx.Response) -> Decimal:
    """A call's settled cost: its header, or for a stream (whose headers leave before the cost is
    known) ``usage.cost`` in its final usage chunk; 0 for a refused call."""
    header = reply.headers.get("x-costwarden-cost-usd")
    if header:
        return Decimal(header)
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        for line in reversed(reply.text.splitlines()):
            if line.startswith("data: {") and '"cost"' in line:
                usage = json.loads(line.removeprefix("data: "), parse_float=Decimal).get("usage") or {}
                if "cost" in usage:
                    return Decimal(usage["cost"])
    return Decimal(0)


def print_summary(outcomes: list[Outcome]) -> None:
    by_dept: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_dept[outcome.department].append(outcome)
    table = Table("dept", "calls", "ok", "downgraded", "clamped", "429 rate", "429 budget", "403 tier",
                  "USD", title="What the gateway did", min_width=100)
    total = Decimal(0)
    for dept, items in sorted(by_dept.items()):
        codes = Counter(o.code for o in items)
        cost = sum((o.cost for o in items), Decimal(0))
        total += cost
        table.add_row(dept, str(len(items)), str(sum(o.status < 400 for o in items)),
                      str(sum(o.downgraded for o in items)), str(sum(o.clamped for o in items)),
                      str(codes["rate_limit_exceeded"]), str(codes["budget_exceeded"]),
                      str(codes["model_not_allowed"]), f"{cost:.4f}")
    table.add_row("total", str(len(outcomes)), "", "", "", "", "", "", f"{total:.4f}", style="bold")
    Console(width=max(console.width, 110)).print(table)  # never squeeze department names


def print_customers(report: Report) -> None:
    """The customers report's customer rows, cut to what compares the plans: cost per call, cache
    hit ratio (input tokens read from the provider's cache), dollars saved, invoice at the rate card."""
    table = Table("customer", "plan", "calls", "cost/call USD", "cache hit", "saved USD", "invoice USD",
                  title="Business customers (costwarden report customers)", min_width=100)
    per_call: dict[str, Decimal] = {}
    rows = [row for row in report.rows if row["level"] == "customer"]
    for row in rows:
        calls, tokens = int(row["requests"] or 0), int(row["input_tokens"] or 0)
        per_call[str(row["customer"])] = Decimal(str(row["cost_usd"])) / calls if calls else Decimal(0)
        hit = Decimal(100 * int(row["cache_read_tokens"] or 0)) / tokens if tokens else Decimal(0)
        table.add_row(f"{row['name']} ({row['customer']})", str(row["plan"]), str(calls),
                      f"{per_call[str(row['customer'])]:.5f}", f"{hit:.0f}%", f"{Decimal(str(row['saved_usd'])):.4f}",
                      str(row["invoice_usd"]))
    Console(width=max(console.width, 110)).print(table)
    ranked = sorted((row for row in rows if per_call[str(row["customer"])] > 0),
                    key=lambda row: per_call[str(row["customer"])])
    if len(ranked) >= 2:
        cheap, dear = ranked[0], ranked[-1]
        less = 100 * (1 - per_call[str(cheap["customer"])] / per_call[str(dear["customer"])])
        console.print(f"{cheap['name']} ({cheap['plan']}) pays {less:.0f}% less per call than {dear['name']} "
                      f"({dear['plan']}) for the same conversations: its plan marks the shared prompt for provider "
                      "caching. Invoices are at each plan's rate card; every column: costwarden report customers",
                      highlight=False, soft_wrap=True)


def print_guide(gateway_url: str, keys: DemoKeys) -> None:
    key = keys.trial  # not a SALES key: the burst has just used up SALES's requests per minute
    console.print(f"""
[bold]Call the gateway yourself[/bold] (a PRODUCT key the traffic left untouched; streaming, Anthropic and
embeddings work too):

  curl {gateway_url}/v1/chat/completions -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "hello"}}]}}' -i

  python -c "from openai import OpenAI; c = OpenAI(base_url='{gateway_url}/v1', api_key='{key}'); \\
print(c.chat.completions.create(model='gpt-4o-mini', messages=[{{'role': 'user', 'content': 'hi'}}]))"

An unbound key needs a department header: -H 'Authorization: Bearer {keys.unbound}' -H 'X-Department-ID: HR'
The ledger: costwarden ledger export --format csv      Metrics: {gateway_url}/metrics""", highlight=False,
                  soft_wrap=True)  # no hard line breaks inside commands meant to be copied
