"""The demo's synthetic traffic: a scripted mix of calls, and what came of them."""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class DemoKeys:
    bound: dict[str, str]
    developers: list[str]  # ENGINEERING spreads its work over several keys, each under the breaker
    agent: str
    desk: str
    unbound: str


@dataclass(frozen=True, slots=True)
class Planned:
    department: str
    key: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    department: str
    status: int
    cost: Decimal
    downgraded: bool
    clamped: bool
    code: str


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
    SUPPORT asks for tier-3 models and gets tier 1, and its tier-1 desk exhausts its team budget.
    """
    k = keys.bound
    rounds = -(-calls // 10)
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
    ]
    planned = []
    for i in range(calls):
        step = script[i % len(script)]
        if not step.key:  # the developers take turns, so that no single key trips the breaker
            step = Planned(step.department, keys.developers[(i // len(script)) * len(keys.developers) // rounds],
                           step.path, step.body, step.headers)
        planned.append(step)
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
        task = progress.add_task("sending synthetic traffic", total=calls)
        for planned in plan_traffic(keys, calls):
            headers = {"Authorization": f"Bearer {planned.key}", **planned.headers}
            reply = client.post(planned.path, json=planned.body, headers=headers)
            code = ""
            if reply.status_code >= 400:
                error = reply.json().get("error", {})
                code = error.get("code") or error.get("type") or ""
            cost = reply.headers.get("x-costwarden-cost-usd")
            outcomes.append(Outcome(planned.department, reply.status_code, Decimal(cost) if cost else Decimal(0),
                                    "x-costwarden-downgraded-from" in reply.headers,
                                    "x-costwarden-max-tokens-clamped" in reply.headers, code))
            progress.advance(task)
    return outcomes


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


def print_guide(gateway_url: str, keys: DemoKeys) -> None:
    key = keys.bound["SALES"]
    console.print(f"""
[bold]Call the gateway yourself[/bold] (a SALES key; streaming, Anthropic and embeddings work too):

  curl {gateway_url}/v1/chat/completions -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "hello"}}]}}' -i

  python -c "from openai import OpenAI; c = OpenAI(base_url='{gateway_url}/v1', api_key='{key}'); \\
print(c.chat.completions.create(model='gpt-4o-mini', messages=[{{'role': 'user', 'content': 'hi'}}]))"

An unbound key needs a department header: -H 'Authorization: Bearer {keys.unbound}' -H 'X-Department-ID: HR'
The ledger: costwarden ledger export --format csv      Metrics: {gateway_url}/metrics""", highlight=False,
                  soft_wrap=True)  # no hard line breaks inside commands meant to be copied
