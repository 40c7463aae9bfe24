"""Silver against Gold (SPEC §12) on the same agent-like workload, through a real gateway.

Starts the mock upstream and a gateway (``costwarden serve``, one worker, SQLite ledger) as
separate processes on loopback, with two customers of one department: GLOBEX on Silver (no
efficiency features) and ACME on Gold (``prompt_caching: auto``, ``thin_context``, high
priority). The workload is the same for both: ``--conversations`` conversations (10) of
``--turns`` turns (8) on the Anthropic Messages API, run concurrently; every call sends a long
system prompt (about 3,000 tokens), a tool list, and the whole conversation so far, and each
answer (150 tokens) is appended before the next question. The mock's prompt caches are emptied
before each plan runs, so neither starts warm.

Printed per plan: cost per conversation (the sum of ``x-costwarden-cost-usd``, the provider's
price of each call as the mock reported its usage: cache reads and writes included), input
tokens sent, the cache hit ratio (tokens read from the cache over all input tokens), tokens
trimmed, and the end-to-end latency p50.

The per-call overhead of the efficiency features is measured apart, in this process, on the very
bodies Gold sent: the time of ``app.efficiency.shape`` (thin context check, breakpoints) plus the
second input estimate the service makes when the body changed, and the capacity queue's path for
a call that finds room. Its p50 is compared with the goal (0.3 ms).

Run: PYTHONPATH=src python bench/plans.py [--conversations 10] [--turns 8] [--thin 32000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from costwarden.app.capacity import CapacityQueue, MemoryCapacityWindow
from costwarden.app.efficiency import shape
from costwarden.core.kinds import Priority
from costwarden.policy import parse_policy
from costwarden.providers import ENDPOINTS

# The process helpers of bench/gateway.py, loaded from its file (bench/ is not a package).
_spec = importlib.util.spec_from_file_location("bench_gateway", Path(__file__).with_name("gateway.py"))
assert _spec is not None and _spec.loader is not None
bench_gateway = importlib.util.module_from_spec(_spec)
sys.modules["bench_gateway"] = bench_gateway  # its dataclasses look their module up
_spec.loader.exec_module(bench_gateway)

MODEL = "claude-sonnet-4-6"
ANSWER_TOKENS = 150
POLICY = """
version: 1
upstreams:
  openai:    {{type: openai,    base_url: "{mock}/v1", api_key_env: OPENAI_API_KEY}}
  anthropic: {{type: anthropic, base_url: "{mock}",    api_key_env: ANTHROPIC_API_KEY, tpm: 100000000}}
departments:
  PRODUCT: {{}}
plans:
  silver:
    priority: standard
    rate_card: {{markup_pct: 20}}
  gold:
    priority: high
    efficiency:
      prompt_caching: auto
      thin_context: {{max_input_tokens: {thin}}}
    rate_card: {{markup_pct: 35}}
customers:
  ACME:   {{name: Acme Corp, plan: gold,   department: PRODUCT}}
  GLOBEX: {{name: Globex,    plan: silver, department: PRODUCT}}
"""
SYSTEM = ("You are the support agent of Acme Cloud. Follow the runbook: identify the customer's account, "
          "check recent invoices and usage, explain every charge in plain words, never promise refunds, "
          "and escalate anything about security to a human. ") * 45  # about 3,000 tokens
TOOLS = [
    {"name": "lookup_invoice", "description": "Fetch an invoice by number, with its line items and taxes.",
     "input_schema": {"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]}},
    {"name": "usage_report", "description": "Daily usage of a service for an account over a date range.",
     "input_schema": {"type": "object", "properties": {"account": {"type": "string"}, "from": {"type": "string"},
                                                        "to": {"type": "string"}}}},
    {"name": "escalate", "description": "Hand the conversation to a human, with a summary for them.",
     "input_schema": {"type": "object", "properties": {"summary": {"type": "string"}}}},
]


@dataclass
class PlanRun:
    name: str
    customer: str
    calls: int = 0
    cost_nanos: int = 0
    input_tokens: int = 0  # all input: uncached, cache reads and cache writes
    cache_read: int = 0
    output_tokens: int = 0
    cache_write: int = 0
    trimmed: int = 0
    latencies: list[float] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)


def question(conversation: int, turn: int) -> str:
    return (f"Conversation {conversation}, question {turn}: my invoice INV-{1000 + conversation}-{turn} shows a "
            f"charge I do not recognise for storage in region eu-{turn}; what is it, and why did it grow "
            f"compared with last month?")


async def conversation(client: httpx.AsyncClient, key: str, number: int, turns: int, run: PlanRun) -> None:
    """Each turn: the question, the model's tool call, the tool's result, then the model's answer."""
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": question(number, turn)})
        call = await send(client, key, messages, run)
        messages.append({"role": "assistant", "content": call["content"]})
        results = [{"type": "tool_result", "tool_use_id": block["id"], "content": tool_result(number, turn)}
                   for block in call["content"] if block.get("type") == "tool_use"]
        if results:
            messages.append({"role": "user", "content": results})
            answer = await send(client, key, messages, run)
            messages.append({"role": "assistant", "content": answer["content"]})


async def send(client: httpx.AsyncClient, key: str, messages: list[dict[str, Any]], run: PlanRun) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 400, "system": SYSTEM, "tools": TOOLS, "messages": list(messages)}
    run.bodies.append(body)
    started = time.perf_counter()
    reply = await client.post("/v1/messages", json=body, headers={"x-api-key": key})
    run.latencies.append(time.perf_counter() - started)
    reply.raise_for_status()
    answer: dict[str, Any] = reply.json()
    usage = answer["usage"]
    read, write = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
    run.calls += 1
    run.input_tokens += usage["input_tokens"] + read + write
    run.cache_read += read
    run.cache_write += write
    run.cost_nanos += int(Decimal(reply.headers["x-costwarden-cost-usd"]) * 10**9)
    run.trimmed += int(reply.headers.get("x-costwarden-context-trimmed", "0"))
    run.output_tokens += usage["output_tokens"]
    return answer


def tool_result(conversation: int, turn: int) -> str:
    lines = [f"INV-{1000 + conversation}-{turn} line {n}: object storage eu-{turn}, {n * 37 % 500} GB-month, "
             f"USD {n * 13 % 97}.{n % 100:02d}" for n in range(12)]
    return "\n".join(lines) + f"\n#mock output_tokens={ANSWER_TOKENS}"  # the mock's answer length


async def run_plan(port: int, mock_port: int, key: str, run: PlanRun, conversations: int, turns: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{mock_port}") as mock:
        (await mock.post("/mock/reset")).raise_for_status()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        await asyncio.gather(*(conversation(client, key, n, turns, run) for n in range(conversations)))


def overhead(policy_text: str, bodies: list[dict[str, Any]], repeat: int = 20) -> tuple[list[float], list[float]]:
    """Seconds per call of the efficiency features and of the capacity queue's path with room."""
    policy = parse_policy(policy_text)
    plan = policy.plans["gold"]
    endpoint = ENDPOINTS["/v1/messages"]
    shaping: list[float] = []
    for _ in range(repeat):
        for body in bodies:
            estimate = endpoint.estimate(body, model=MODEL)  # the service's own estimate: not counted
            middle = time.perf_counter()
            shaped = shape(plan, endpoint, body, model=MODEL, customer="ACME", tokens=estimate.tokens)
            if shaped.payload is not body:
                endpoint.estimate(shaped.payload, model=MODEL)
            shaping.append(time.perf_counter() - middle)
    queue = CapacityQueue(MemoryCapacityWindow())

    async def acquire_all() -> list[float]:
        times = []
        for _ in range(repeat * len(bodies)):
            started = time.perf_counter()
            await queue.acquire("anthropic", 5000, 100_000_000, Priority.HIGH)
            times.append(time.perf_counter() - started)
        return times

    return shaping, asyncio.run(acquire_all())


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def create_key(db_url: str, policy: Path, customer: str, env: dict[str, str]) -> str:
    out = subprocess.run(bench_gateway.cli("keys", "create", "--customer", customer, "--json", "--db", db_url,
                                           "--policy", str(policy)), env=env, check=True, capture_output=True)
    return str(json.loads(out.stdout)["key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--thin", type=int, default=32000, help="Gold's thin_context.max_input_tokens (32000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="costwarden-plans-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-ant-bench"}
    mock_port, gw_port = bench_gateway.free_port(), bench_gateway.free_port()
    policy_text = POLICY.format(mock=f"http://127.0.0.1:{mock_port}", thin=args.thin)
    policy = tmp / "policy.yaml"
    policy.write_text(policy_text)
    db_url = f"sqlite:///{tmp}/ledger.db"
    runs = [PlanRun("silver", "GLOBEX"), PlanRun("gold", "ACME")]
    keys = {r.customer: create_key(db_url, policy, r.customer, env) for r in runs}
    print(f"plans bench: {os.cpu_count()} cores, load average {bench_gateway.load_avg()}; "
          f"{args.conversations} conversations x {args.turns} turns on {MODEL}, each plan; "
          f"Gold trims above {args.thin:,} input tokens")
    with bench_gateway.process(bench_gateway.cli("mock-upstream", "--port", str(mock_port)), tmp / "mock.log",
                               env) as mock, \
            bench_gateway.process(bench_gateway.cli("serve", "--policy", str(policy), "--db", db_url,
                                                    "--port", str(gw_port)), tmp / "gateway.log", env) as gateway:
        bench_gateway.wait_for_port(mock_port, mock, "mock upstream")
        bench_gateway.wait_for_port(gw_port, gateway, "gateway")
        for plan_run in runs:
            asyncio.run(run_plan(gw_port, mock_port, keys[plan_run.customer], plan_run, args.conversations,
                                 args.turns))
    report(runs, args.conversations, policy_text)


def report(runs: list[PlanRun], conversations: int, policy_text: str) -> None:
    print(f"\n{'plan':<8}{'calls':>6}{'$/conversation':>16}{'input tokens':>14}{'output':>9}{'cache hit':>11}"
          f"{'cache write':>13}{'trimmed':>9}{'p50 ms':>9}")
    for r in runs:
        per = Decimal(r.cost_nanos) / conversations / 10**9
        hit = r.cache_read / r.input_tokens if r.input_tokens else 0.0
        print(f"{r.name:<8}{r.calls:>6}{per:>16.6f}{r.input_tokens:>14,}{r.output_tokens:>9,}{hit:>11.1%}{r.cache_write:>13,}{r.trimmed:>9,}"
              f"{statistics.median(r.latencies) * 1000:>9.2f}")
    silver, gold = runs
    saving = 1 - Decimal(gold.cost_nanos) / Decimal(silver.cost_nanos)
    shaping, queueing = overhead(policy_text, gold.bodies)
    print(f"\nefficiency features per call (in process, {len(shaping)} runs over Gold's {len(gold.bodies)} bodies): "
          f"p50 {p(shaping, 0.5) * 1000:.3f} ms, p99 {p(shaping, 0.99) * 1000:.3f} ms")
    print(f"capacity queue, a call that finds room (memory window): p50 {p(queueing, 0.5) * 1000:.3f} ms")
    print("\ngoals:")
    check("Gold costs >= 40% less than Silver", saving >= Decimal("0.4"), f"{saving:.1%} less")
    check("efficiency overhead <= 0.3 ms at p50", p(shaping, 0.5) <= 0.0003, f"{p(shaping, 0.5) * 1000:.3f} ms")


def check(label: str, ok: bool, detail: str) -> None:
    print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")


if __name__ == "__main__":
    main()
