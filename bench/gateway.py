"""Added latency and throughput of the gateway over calling the upstream directly.

Starts the project's mock upstream and a gateway (``costwarden serve``, one worker, SQLite
ledger, budgets, reservations, rate limits and a per-key breaker all on) as separate processes
on loopback, then drives both with the same keep-alive HTTP/1.1 load generator, level by level:
direct first, then through the gateway, at each concurrency. Prints p50/p99 latency, calls per
second, the latency the gateway adds and its throughput as a share of direct, and checks the
hard cap with a burst at concurrency 64 against a department whose budget fits about 20 calls.

With ``--store redis`` the gateway keeps its counters in a Redis server of its own (started here,
without persistence) and the run also counts the Redis commands per call from the server's
INFO commandstats.

Run: python bench/gateway.py [--seconds 5] [--levels 1,16,64] [--stream-level 16] [--store redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import uvloop
except ImportError:  # the generator still works on the default loop, only slower
    uvloop = None  # type: ignore[assignment]

# gpt-4o-mini at $0.15 / $0.60 per 1M tokens: a capped call of ~20 input tokens and 1,000 output
# costs about $0.0006, so the CAP budget of $0.012 fits about 20 worst cases.
CAP_LIMIT_USD = "0.012"
CAP_LIMIT_NANOS = 12_000_000
POLICY = """
version: 1
timezone: America/New_York
upstreams:
  openai:    {{type: openai,    base_url: "{mock}/v1", api_key_env: OPENAI_API_KEY}}
  anthropic: {{type: anthropic, base_url: "{mock}",    api_key_env: ANTHROPIC_API_KEY}}
organization:
  budgets: [{{limit: 10000000, period: monthly, action: reject}}]
departments:
  BENCH:
    budgets:
      - {{limit: 1000000, period: monthly, alert_at: [0.5, 0.8], action: reject}}
    limits: {{tpm: 1000000000, rpm: 100000000}}
    per_key:
      budgets: [{{limit: 100000, period: 1h, action: reject}}]
  CAP:
    budgets: [{{limit: {cap}, period: monthly, action: reject}}]
    limits: {{tpm: 1000000000, rpm: 100000000}}
"""
CHAT = {"model": "gpt-4o-mini", "max_tokens": 64,
        "messages": [{"role": "system", "content": "You are a terse assistant."},
                     {"role": "user", "content": "Summarise the quarterly report in one line."}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
CAPPED = {"model": "gpt-4o-mini", "max_tokens": 1000,
          "messages": [{"role": "user", "content": "burst #mock output_tokens=1000"}]}


# -- the load generator -------------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; parses just enough of a response to find its end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.status = 0
        self.body_start = -1  # where the body of the current response starts, once headers are in
        self.length = -1  # content-length, or -1 for a chunked body
        self.scan = 0  # chunked: where the next chunk-size line starts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's too)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        if self.body_start < 0 and not self._headers():
            return
        end = self._body_end()
        if end >= 0:
            del self.buffer[:end]
            self.body_start = -1
            self.waiter.set_result(self.status)

    def _headers(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        self.status = int(head[0].split(" ", 2)[1])
        self.length = -1
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                self.length = int(value)
        self.body_start = self.scan = end + 4
        return True

    def _body_end(self) -> int:
        if self.length >= 0:
            end = self.body_start + self.length
            return end if len(self.buffer) >= end else -1
        while True:  # chunked: <hex size>\r\n<data>\r\n ... 0\r\n\r\n
            line_end = self.buffer.find(b"\r\n", self.scan)
            if line_end < 0:
                return -1
            size = int(bytes(self.buffer[self.scan:line_end]).split(b";")[0], 16)
            chunk_end = line_end + 2 + size + 2
            if len(self.buffer) < chunk_end:
                return -1
            self.scan = chunk_end
            if size == 0:
                return chunk_end

    async def call(self, request: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def http_request(port: int, path: str, body: dict[str, object], key: str) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


@dataclass
class Result:
    calls: int
    errors: int
    seconds: float
    latencies: list[float]  # seconds, successful calls only
    client_cpu: float  # the generator's own CPU seconds
    statuses: list[int]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def load(port: int, request: bytes, concurrency: int, seconds: float, warmup: float = 0.5,
               total: int | None = None) -> Result:
    """``concurrency`` connections calling back to back for ``warmup + seconds`` (or until
    ``total`` calls were sent); only calls that start after the warm-up are measured."""
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(_Connection, "127.0.0.1", port)
        connections.append(protocol)
    start = time.perf_counter()
    measure_from = start + (warmup if total is None else 0.0)
    stop = measure_from + seconds
    latencies: list[float] = []
    statuses: list[int] = []
    sent = [0]

    async def worker(connection: _Connection) -> None:
        while True:
            began = time.perf_counter()
            if began >= stop or (total is not None and sent[0] >= total):
                return
            sent[0] += 1
            status = await connection.call(request)
            if began >= measure_from:
                statuses.append(status)
                if status == 200:
                    latencies.append(time.perf_counter() - began)

    cpu = time.process_time()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - measure_from
    cpu = time.process_time() - cpu
    for connection in connections:
        assert connection.transport is not None
        connection.transport.close()
    return Result(len(statuses), sum(1 for s in statuses if s != 200), elapsed, latencies, cpu, statuses)


# -- processes ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout:g} s")


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def cli(*args: str) -> list[str]:
    """The costwarden command, run by this interpreter (so that PYTHONPATH=src is honoured)."""
    return [sys.executable, "-c", "import sys; from costwarden.cli import main; sys.argv[0] = 'costwarden'; main()",
            *args]


def create_key(db_url: str, policy: Path, department: str, env: dict[str, str]) -> str:
    out = subprocess.run(cli("keys", "create", "--department", department, "--json", "--db", db_url,
                             "--policy", str(policy)), env=env, check=True, capture_output=True)
    return str(json.loads(out.stdout)["key"])


def ledger_events(db_url: str, department: str, env: dict[str, str]) -> list[dict[str, object]]:
    out = subprocess.run(cli("ledger", "export", "--department", department, "--format", "jsonl", "--db", db_url),
                         env=env, check=True, capture_output=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


# -- the null server: the generator's own ceiling -----------------------------------------------

NULL_SERVER = r"""
import asyncio, sys
body = b'{"id":"x","object":"chat.completion","choices":[]}' * 8
reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0: return
            size = 0
            for line in self.buf[:end].split(b"\r\n"):
                if line[:15].lower() == b"content-length:": size = int(line[15:])
            if len(self.buf) < end + 4 + size: return
            self.buf = self.buf[end + 4 + size:]
            self.t.write(reply)
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
try:
    import uvloop; uvloop.install()
except ImportError: pass
asyncio.run(main())
"""


# -- the run ------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    direct: Result
    gateway: Result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f}"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(rows: list[Row]) -> None:
    print()
    print(f"{'level':<14}{'direct/s':>10}{'gateway/s':>11}{'ratio':>7}  {'p50 dir':>8}{'p50 gw':>8}{'added':>8}"
          f"  {'p99 dir':>8}{'p99 gw':>8}{'added':>8}  {'errors':>6}  {'gen cpu':>7}")
    for row in rows:
        d, g = row.direct, row.gateway
        print(f"{row.name:<14}{d.rate:>10,.0f}{g.rate:>11,.0f}{g.rate / d.rate:>7.2f}  "
              f"{ms(d.percentile(50)):>8}{ms(g.percentile(50)):>8}{ms(g.percentile(50) - d.percentile(50)):>8}  "
              f"{ms(d.percentile(99)):>8}{ms(g.percentile(99)):>8}{ms(g.percentile(99) - d.percentile(99)):>8}  "
              f"{d.errors + g.errors:>6}  {g.client_cpu / g.seconds:>6.0%}")
    print("(latencies in ms; 'added' = gateway minus direct; 'gen cpu' = the generator's CPU share "
          "during the gateway run)")


def check(label: str, ok: bool, detail: str) -> bool:
    print(f"  [{'PASS' if ok else 'MISS'}] {label}: {detail}")
    return ok


async def measure(args: argparse.Namespace, mock_port: int, gw_port: int, key: str) -> list[Row]:
    rows = []
    plans = [(f"unary c={c}", c, CHAT) for c in args.levels]
    if args.stream_level:
        plans.append((f"stream c={args.stream_level}", args.stream_level, STREAM))
    for name, concurrency, body in plans:
        direct = await load(mock_port, http_request(mock_port, "/v1/chat/completions", body, "sk-bench"),
                            concurrency, args.seconds)
        gateway = await load(gw_port, http_request(gw_port, "/v1/chat/completions", body, key),
                             concurrency, args.seconds)
        rows.append(Row(name, direct, gateway))
        print(f"  {name}: direct {direct.rate:,.0f}/s, gateway {gateway.rate:,.0f}/s", flush=True)
    return rows


async def ceiling(port: int, seconds: float) -> Result:
    return await load(port, http_request(port, "/v1/chat/completions", CHAT, "sk-bench"), 64, seconds)


async def burst(port: int, key: str, calls: int) -> list[int]:
    request = http_request(port, "/v1/chat/completions", CAPPED, key)
    result = await load(port, request, 64, seconds=60.0, total=calls)
    return result.statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64],
                        help="concurrency levels for unary calls (default 1,16,64)")
    parser.add_argument("--stream-level", type=int, default=16, help="concurrency of the streaming run (0: skip)")
    parser.add_argument("--burst", type=int, default=300, help="calls in the hard-cap burst (default 300)")
    parser.add_argument("--store", default="memory",
                        help="counter store: memory (default), redis (a server started here) or a redis:// URL")
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()

    with tempfile.TemporaryDirectory(prefix="costwarden-bench-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-ant-bench"}
    mock_port, gw_port, null_port = free_port(), free_port(), free_port()
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.format(mock=f"http://127.0.0.1:{mock_port}", cap=CAP_LIMIT_USD))
    db_url = f"sqlite:///{tmp}/ledger.db"
    keys = {dept: create_key(db_url, policy, dept, env) for dept in ("BENCH", "CAP")}
    print(f"gateway bench: {os.cpu_count()} cores, load average {load_avg()}, {args.seconds:g} s per run")

    with process([sys.executable, "-c", NULL_SERVER, str(null_port)], tmp / "null.log", env) as null:
        wait_for_port(null_port, null, "null server")
        top = asyncio.run(ceiling(null_port, min(args.seconds, 3.0)))
    print(f"generator ceiling (64 connections to a static HTTP server): {top.rate:,.0f} calls/s, "
          f"p50 {top.percentile(50) * 1000:.2f} ms")

    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_store(args.store, tmp, env))
        serve = ["--redis", redis_url] if redis_url else []
        mock = stack.enter_context(process(cli("mock-upstream", "--port", str(mock_port)), tmp / "mock.log", env))
        gateway = stack.enter_context(process(cli("serve", "--policy", str(policy), "--db", db_url, "--port",
                                                  str(gw_port), *serve), tmp / "gateway.log", env))
        wait_for_port(mock_port, mock, "mock upstream")
        wait_for_port(gw_port, gateway, "gateway")
        print(f"mock upstream pid {mock.pid} on :{mock_port}; gateway pid {gateway.pid} on :{gw_port}", flush=True)
        rows = asyncio.run(measure(args, mock_port, gw_port, keys["BENCH"]))
        if redis_url:
            redis_commands_per_call(redis_url, gw_port, keys["BENCH"])
        statuses = asyncio.run(burst(gw_port, keys["CAP"], args.burst))
        events = [e for e in ledger_events(db_url, "CAP", env) if e["record"] == "event"]
        gateway_log = (tmp / "gateway.log").read_text(errors="replace")
    print_table(rows)
    print(f"load average after the runs: {load_avg()}")
    report(rows, statuses, events, gateway_log)


@contextlib.contextmanager
def redis_store(store: str, tmp: Path, env: dict[str, str]) -> Iterator[str | None]:
    """The Redis URL the gateway keeps its counters at (a server started here for ``redis``), or
    None for in-process counters."""
    if store == "memory":
        yield None
        return
    if store != "redis":
        yield store
        return
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp)]
    with process(args, tmp / "redis.log", env) as server:
        wait_for_port(port, server, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"


SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


def redis_commands_per_call(url: str, port: int, key: str, calls: int = 2000, concurrency: int = 16) -> float:
    """Redis round trips per gateway call, measured on the server over ``calls`` calls (after
    CONFIG RESETSTAT): scripts run (INFO commandstats; the commands a script runs inside are
    listed there too, so they are shown apart) and requests read from clients (INFO stats
    ``total_reads_processed``). The gateway's background work (leases, expiry sweeps, the
    reconciler) is counted too, so these are upper bounds of the per-call cost."""
    from redis import Redis

    client = Redis.from_url(url)
    try:
        client.config_resetstat()
        result = asyncio.run(load(port, http_request(port, "/v1/chat/completions", CHAT, key), concurrency,
                                  seconds=120.0, total=calls))
        reads = int(client.info("stats")["total_reads_processed"]) - 1  # less this INFO's own read
        stats = client.info("commandstats")
    finally:
        client.close()
    done = max(1, len(result.statuses))
    counts = {name.removeprefix("cmdstat_"): int(fields["calls"]) for name, fields in stats.items()}
    scripts = sum(counts.get(name, 0) for name in SCRIPT_COMMANDS)
    detail = ", ".join(f"{name} {n / done:.2f}" for name, n in sorted(counts.items())
                       if not name.startswith(("config", "info")))
    print(f"\nredis, {done:,} calls at concurrency {concurrency} ({result.errors} errors): "
          f"{scripts / done:.2f} scripts and {reads / done:.2f} client requests per call")
    print(f"  commands per call, those run inside scripts included: {detail}")
    check("Redis round trips per call <= 2", reads / done <= 2.05, f"{reads / done:.2f}")
    return reads / done


def report(rows: list[Row], statuses: list[int], events: list[dict[str, object]], gateway_log: str) -> None:
    by_name = {row.name: row for row in rows}
    print("\ngoals (one worker):")
    if (c1 := by_name.get("unary c=1")) is not None:
        added = c1.gateway.percentile(50) - c1.direct.percentile(50)
        check("added p50 <= 1 ms at concurrency 1", added <= 0.001, f"{added * 1000:.2f} ms")
    if (c16 := by_name.get("unary c=16")) is not None:
        added = c16.gateway.percentile(99) - c16.direct.percentile(99)
        check("added p99 <= 5 ms at concurrency 16", added <= 0.005, f"{added * 1000:.2f} ms")
    if (c64 := by_name.get("unary c=64")) is not None:
        rate, ratio = c64.gateway.rate, c64.gateway.rate / c64.direct.rate
        check(">= 2,000 calls/s at concurrency 64", rate >= 2000, f"{rate:,.0f} calls/s")
        check(">= 0.18 x direct at concurrency 64", ratio >= 0.18, f"{ratio:.2f} x")
    admitted = statuses.count(200)
    others = sorted(set(statuses) - {200, 429})
    settled = sum(int(str(e["cost_nanos"])) for e in events)
    overrun = sum(int(str(e["overrun_tokens"])) for e in events)
    print(f"\nhard cap: {len(statuses)} calls at concurrency 64 against a ${CAP_LIMIT_USD} reject budget: "
          f"{admitted} admitted, {len(statuses) - admitted} refused; {len(events)} events in the ledger")
    ok = check("only 200 and 429 answers", not others, f"other statuses: {others or 'none'}")
    ok &= check("settled spend <= limit", settled <= CAP_LIMIT_NANOS,
               f"${settled / 1e9:.9f} of ${CAP_LIMIT_USD} (overrun tokens {overrun})")
    ok &= check("one ledger event per admitted call", len(events) == admitted, f"{len(events)} == {admitted}")
    errors = [line for line in gateway_log.splitlines() if "Traceback" in line or " ERROR " in line]
    ok &= check("no errors in the gateway log", not errors, f"{len(errors)} lines")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
