"""Added latency and throughput of the gateway over calling the upstream directly.

Starts the project's mock upstream and a gateway (``costwarden serve``, one worker, SQLite
ledger, budgets, reservations, rate limits and a per-key breaker all on) as separate processes
on loopback, then drives both with the same keep-alive HTTP/1.1 load generator, level by level:
direct first, then through the gateway, at each concurrency. Prints p50/p99 latency, calls per
second, the latency the gateway adds and its throughput as a share of direct, and checks the
hard cap with a burst at concurrency 64 against a department whose budget fits about 20 calls.

With ``--store redis`` it runs the scale-out configuration too (Redis counters and a PostgreSQL
ledger, with 1 and then 2 workers) beside the embedded one, and measures what each call costs:
the gateway's CPU (all its processes), PostgreSQL commits (``pg_stat_database.xact_commit``) and
Redis reads (requests read from clients' sockets, ``INFO stats``: at c=1 a call's round trips; at
higher concurrency the scripts of calls sent together share a read) and commands (``INFO
commandstats``, those run inside scripts included). Redis and PostgreSQL are started in temporary directories
unless ``--redis`` and ``--db`` name servers the bench may use (it empties that Redis database and
creates, then drops, databases beside the one named).

With ``--gateway-cores N`` each gateway (with its writer and worker processes) runs on the first N
cores only, and this script (the load generator), the mock upstream, Redis and PostgreSQL on the
others: what one replica does when the servers it uses are not taking its cores, as when they run
on machines of their own. Without it everything shares every core, and a configuration with
Redis and PostgreSQL on the same machine pays for their CPU in its own rate.

Run: python bench/gateway.py [--seconds 5] [--levels 1,16,64] [--stream-level 16]
     python bench/gateway.py --store redis [--redis redis://...] [--db postgresql://...] [--gateway-cores 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import services

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
    answered: int = 0  # every call answered, those of the warm-up included

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
    ``total`` calls were sent); only calls that start after the warm-up are measured (rate,
    latencies, statuses), but every answered call is counted (``answered``): what a probe reads
    around the whole run is divided by that."""
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
    answered = [0]

    async def worker(connection: _Connection) -> None:
        while True:
            began = time.perf_counter()
            if began >= stop or (total is not None and sent[0] >= total):
                return
            sent[0] += 1
            status = await connection.call(request)
            answered[0] += 1
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
    return Result(len(statuses), sum(1 for s in statuses if s != 200), elapsed, latencies, cpu, statuses,
                  answered[0])


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
def process(args: list[str], log: Path, env: dict[str, str],
            cores: set[int] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` for the block, on ``cores`` only if given (set before it starts, so every
    process it starts inherits them)."""
    pin = None if cores is None else functools.partial(os.sched_setaffinity, 0, cores)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=pin)
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
class Costs:
    """What the gateway spent on one run: CPU of all its processes, PostgreSQL commits and Redis
    commands (None when the configuration has no such server)."""

    cpu_s: float  # every process of the gateway
    cpu_descendants_s: float  # its child processes: the ledger writer, and with several workers the workers
    commits: int | None
    redis_commands: int | None
    redis_cpu_s: float | None = None
    redis_requests: int | None = None  # requests Redis read from its clients' sockets
    pg_cpu_s: float | None = None  # PostgreSQL's processes, when the bench can see them (a local server)
    machine_busy_s: float = 0.0  # every process on the machine, this bench's included
    machine_busy: float = 0.0  # the share of all cores that was busy


@dataclass
class Row:
    name: str
    direct: Result
    gateway: Result
    costs: Costs | None = None

    def per_call(self, amount: float | None) -> float | None:
        """``amount``, read around the whole gateway run, per call it answered."""
        return None if amount is None or not self.gateway.answered else amount / self.gateway.answered


@dataclass
class Config:
    """A gateway configuration: its ledger, its counter store and its worker processes."""

    name: str
    db_url: str
    redis_url: str | None = None
    workers: int = 1
    stream: bool = True  # run the streaming level too

    def serve_args(self) -> list[str]:
        extra = ["--redis", self.redis_url] if self.redis_url else []
        return [*extra, "--workers", str(self.workers)] if self.workers > 1 else extra


class Probe:
    """Measures what one gateway run costs (see ``Costs``), from outside the gateway."""

    def __init__(self, pid: int, config: Config) -> None:
        self.pid, self.config = pid, config
        self._cpu = (0.0, 0.0)
        self._commits = 0
        self._redis_cpu = 0.0
        self._pg_pid = services.pg_server_pid(config.db_url) if config.db_url.startswith("postgresql") else None
        self._pg_cpu = 0.0
        self._machine = (0.0, 0.0)

    def start(self) -> None:
        if self._pg_pid is not None:
            self._pg_cpu = services.pg_server_cpu_seconds(self._pg_pid)
        if self.config.db_url.startswith("postgresql"):
            # the gateway was idle (the direct run) for about 5 s: at most that much background
            # activity is still unreported, and is counted against this run
            self._commits = services.pg_commits(self.config.db_url)
        if self.config.redis_url:
            services.reset_redis_stats(self.config.redis_url)
            self._redis_cpu = services.redis_cpu_seconds(self.config.redis_url)
        self._cpu = services.own_and_descendants_cpu_seconds(self.pid)
        self._machine = services.machine_cpu_seconds()

    def stop(self) -> Costs:
        busy, total = (now - then for now, then in zip(services.machine_cpu_seconds(), self._machine, strict=True))
        own, descendants = services.own_and_descendants_cpu_seconds(self.pid)
        own, descendants = own - self._cpu[0], descendants - self._cpu[1]
        pg_cpu = services.pg_server_cpu_seconds(self._pg_pid) - self._pg_cpu if self._pg_pid is not None else None
        requests = services.redis_client_requests(self.config.redis_url) if self.config.redis_url else None
        commands = services.redis_command_count(self.config.redis_url) if self.config.redis_url else None
        redis_cpu = services.redis_cpu_seconds(self.config.redis_url) - self._redis_cpu if self.config.redis_url else None
        commits = None
        if self.config.db_url.startswith("postgresql"):
            # after every backend reported this run; less the reading taken by start()
            commits = services.pg_settled_commits(self.config.db_url) - self._commits - 1
        return Costs(own + descendants, descendants, commits, commands, redis_cpu, requests, pg_cpu, busy,
                     busy / total if total else 0.0)


@dataclass
class Outcome:
    """One configuration's run."""

    config: Config
    rows: list[Row]
    statuses: list[int] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    log: str = ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f}"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(rows: list[Row]) -> None:
    print()
    print(f"{'level':<14}{'direct/s':>10}{'gateway/s':>11}{'ratio':>7}  {'p50 dir':>8}{'p50 gw':>8}{'added':>8}"
          f"  {'p99 dir':>8}{'p99 gw':>8}{'added':>8}  {'errors':>6}  {'gen cpu':>7}  {'gw cpu/call':>11}"
          f"{'writer':>8}")
    for row in rows:
        d, g = row.direct, row.gateway
        print(f"{row.name:<14}{d.rate:>10,.0f}{g.rate:>11,.0f}{g.rate / d.rate:>7.2f}  "
              f"{ms(d.percentile(50)):>8}{ms(g.percentile(50)):>8}{ms(g.percentile(50) - d.percentile(50)):>8}  "
              f"{ms(d.percentile(99)):>8}{ms(g.percentile(99)):>8}{ms(g.percentile(99) - d.percentile(99)):>8}  "
              f"{d.errors + g.errors:>6}  {g.client_cpu / g.seconds:>6.0%}  {_cpu_ms(row, own=True):>11}"
              f"{_cpu_ms(row, own=False):>8}")
    print("(latencies in ms; 'added' = gateway minus direct; 'gen cpu' = the generator's CPU share "
          "during the gateway run; 'gw cpu/call' = the gateway process's CPU (user + system) per call, "
          "'writer' = its child processes': the ledger writer, and with several workers the workers)")


def _cpu_ms(row: Row, *, own: bool) -> str:
    """The gateway process's own CPU per call (``own``), or its child processes', in ms."""
    if row.costs is None:
        return "-"
    return ms(row.per_call(row.costs.cpu_s - row.costs.cpu_descendants_s if own else row.costs.cpu_descendants_s)
              or float("nan"))


def check(label: str, ok: bool, detail: str) -> bool:
    print(f"  [{'PASS' if ok else 'MISS'}] {label}: {detail}")
    return ok


async def measure(args: argparse.Namespace, mock_port: int, gw_port: int, key: str,
                  probe: Probe | None = None, stream: bool = True) -> list[Row]:
    rows = []
    plans = [(f"unary c={c}", c, CHAT) for c in args.levels]
    if args.stream_level and stream:
        plans.append((f"stream c={args.stream_level}", args.stream_level, STREAM))
    for name, concurrency, body in plans:
        direct = await load(mock_port, http_request(mock_port, "/v1/chat/completions", body, "sk-bench"),
                            concurrency, args.seconds)
        if probe is not None:
            await asyncio.to_thread(probe.start)
        gateway = await load(gw_port, http_request(gw_port, "/v1/chat/completions", body, key),
                             concurrency, args.seconds)
        costs = await asyncio.to_thread(probe.stop) if probe is not None else None
        rows.append(Row(name, direct, gateway, costs))
        print(f"  {name}: direct {direct.rate:,.0f}/s, gateway {gateway.rate:,.0f}/s{describe(rows[-1])}",
              flush=True)
    return rows


def describe(row: Row) -> str:
    """A run's costs per call, for the progress lines."""
    if row.costs is None:
        return ""
    parts = [f"CPU {_figure(row.per_call(row.costs.cpu_s * 1000), '.2f')} ms/call"]
    if (commits := row.per_call(row.costs.commits)) is not None:
        parts.append(f"{commits:.2f} commits/call")
    if (trips := row.per_call(row.costs.redis_requests)) is not None:
        parts.append(f"{trips:.2f} Redis reads/call")
    if (commands := row.per_call(row.costs.redis_commands)) is not None:
        parts.append(f"{commands:.1f} Redis commands/call")
    if (redis_cpu := row.per_call(row.costs.redis_cpu_s)) is not None:
        parts.append(f"Redis CPU {redis_cpu * 1e6:.0f} us/call")
    if (pg_cpu := row.per_call(row.costs.pg_cpu_s)) is not None:
        parts.append(f"PostgreSQL CPU {pg_cpu * 1e6:.0f} us/call")
    parts.append(f"machine {_busy(row)} busy, {_machine_ms(row)} ms/call")
    return " (" + ", ".join(parts) + ")"


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
    parser.add_argument("--store", choices=["memory", "redis"], default="memory",
                        help="redis: also run Redis + PostgreSQL with 1 and 2 workers, beside the embedded one")
    parser.add_argument("--redis", help="a Redis URL the bench may empty (default: start one in a temp dir)")
    parser.add_argument("--db", help="a PostgreSQL URL beside which the bench creates its databases "
                                     "(default: start a cluster in a temp dir, with PostgreSQL's durable defaults)")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="worker counts of the scale-out runs (default 1,2)")
    parser.add_argument("--gateway-cores", type=int, default=0, metavar="N",
                        help="run each gateway on the first N cores and everything else (this generator, "
                             "the mock, Redis, PostgreSQL) on the others (default 0: all share every core)")
    args = parser.parse_args()
    args.cores = split_cores(args.gateway_cores)
    if uvloop is not None:
        uvloop.install()

    with tempfile.TemporaryDirectory(prefix="costwarden-bench-") as tmp, contextlib.ExitStack() as servers:
        configs = [Config("embedded: memory + SQLite", f"sqlite:///{tmp}/ledger.db")]
        if args.store == "redis":
            redis_url = args.redis or servers.enter_context(services.redis())
            pg_url = args.db or servers.enter_context(services.postgres())
            for workers in args.workers:
                name = f"cwbench_{os.getpid()}_{workers}"
                db_url = services.create_database(pg_url, name)
                servers.callback(services.drop_database, pg_url, name)
                configs.append(Config(f"Redis + PostgreSQL, {workers} worker{'s' * (workers > 1)}", db_url,
                                      redis_url, workers, stream=False))
        run(args, Path(tmp), configs)


def split_cores(gateway_cores: int) -> set[int] | None:
    """The gateway's cores, with this process (and so whatever it starts from now on) moved to
    the rest; None when nothing is pinned."""
    if not gateway_cores:
        return None
    cores = sorted(os.sched_getaffinity(0))
    if not 0 < gateway_cores < len(cores):
        raise SystemExit(f"--gateway-cores must leave at least one of this machine's {len(cores)} cores "
                         "to the generator, the mock and the servers")
    os.sched_setaffinity(0, cores[gateway_cores:])
    return set(cores[:gateway_cores])


def run(args: argparse.Namespace, tmp: Path, configs: list[Config]) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-ant-bench"}
    mock_port, null_port = free_port(), free_port()
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.format(mock=f"http://127.0.0.1:{mock_port}", cap=CAP_LIMIT_USD))
    print(f"gateway bench: {os.cpu_count()} cores, load average {load_avg()}, {args.seconds:g} s per run")
    if args.cores is not None:
        print(f"the gateway on cores {sorted(args.cores)}; the generator, the mock and the servers on "
              f"{sorted(os.sched_getaffinity(0))}")

    with process([sys.executable, "-c", NULL_SERVER, str(null_port)], tmp / "null.log", env) as null:
        wait_for_port(null_port, null, "null server")
        top = asyncio.run(ceiling(null_port, min(args.seconds, 3.0)))
    print(f"generator ceiling (64 connections to a static HTTP server): {top.rate:,.0f} calls/s, "
          f"p50 {top.percentile(50) * 1000:.2f} ms")

    outcomes = []
    with process(cli("mock-upstream", "--port", str(mock_port)), tmp / "mock.log", env) as mock:
        wait_for_port(mock_port, mock, "mock upstream")
        for number, config in enumerate(configs):
            print(f"\n{config.name}", flush=True)
            outcomes.append(run_config(args, tmp / f"config-{number}", policy, mock_port, config, env))
    ok = True
    for outcome in outcomes:
        print(f"\n== {outcome.config.name}")
        print_table(outcome.rows)
        ok &= report(outcome.rows, outcome.statuses, outcome.events, outcome.log)
    if len(outcomes) > 1:
        print_side_by_side(outcomes)
    print(f"load average after the runs: {load_avg()}")
    if not ok:
        raise SystemExit(1)


def run_config(args: argparse.Namespace, tmp: Path, policy: Path, mock_port: int, config: Config,
               env: dict[str, str]) -> Outcome:
    """Start a gateway in ``config``, measure it level by level, then burst against the cap."""
    tmp.mkdir()
    if config.redis_url:
        services.empty_redis(config.redis_url)
    gw_port = free_port()
    keys = {dept: create_key(config.db_url, policy, dept, env) for dept in ("BENCH", "CAP")}
    serve = cli("serve", "--policy", str(policy), "--db", config.db_url, "--port", str(gw_port),
                "--spool", str(tmp / "spool"), *config.serve_args())
    with process(serve, tmp / "gateway.log", env, args.cores) as gateway:
        wait_for_port(gw_port, gateway, "gateway")
        print(f"mock upstream on :{mock_port}; gateway pid {gateway.pid} on :{gw_port}", flush=True)
        rows = asyncio.run(measure(args, mock_port, gw_port, keys["BENCH"], Probe(gateway.pid, config),
                                   config.stream))
        statuses = asyncio.run(burst(gw_port, keys["CAP"], args.burst))
    events = [e for e in ledger_events(config.db_url, "CAP", env) if e["record"] == "event"]
    return Outcome(config, rows, statuses, events, (tmp / "gateway.log").read_text(errors="replace"))


def print_side_by_side(outcomes: list[Outcome]) -> None:
    """The headline figures of every configuration, one line each."""
    print("\nside by side (req/s through the gateway; added p50 at c=1 over direct; per call at the highest level)")
    print(f"{'configuration':<32}{'req/s by level':>24}{'x embedded':>12}{'added p50':>11}{'CPU/call':>10}"
          f"{'commits/call':>16}{'Redis reads/call':>18}{'busy':>6}{'machine/call':>14}")
    embedded_rate = [row for row in outcomes[0].rows if row.name.startswith("unary")][-1].gateway.rate
    for outcome in outcomes:
        unary = [row for row in outcome.rows if row.name.startswith("unary")]
        rates = " / ".join(f"{row.gateway.rate:,.0f}" for row in unary)
        first, last = unary[0], unary[-1]
        share = f"{last.gateway.rate / embedded_rate:.2f}" if embedded_rate else "-"
        added = first.gateway.percentile(50) - first.direct.percentile(50)
        cpu = _figure(last.per_call(last.costs.cpu_s * 1000 if last.costs else None), ".2f") + " ms"
        commits = " / ".join(_figure(row.per_call(row.costs.commits if row.costs else None), ".2f")
                             for row in (first, last))
        commands = " / ".join(_figure(row.per_call(row.costs.redis_requests if row.costs else None), ".2f")
                              for row in (first, last))
        busy, machine = _busy(last), _machine_ms(last) + " ms"
        print(f"{outcome.config.name:<32}{rates:>24}{share:>12}{added * 1000:>8.2f} ms{cpu:>10}{commits:>16}"
              f"{commands:>18}{busy:>6}{machine:>14}")
    levels = [row.name.split("=")[1] for row in outcomes[0].rows if row.name.startswith("unary")]
    print(f"(levels c={'/'.join(levels)}; 'x embedded': req/s at the highest level over the embedded one's; commits and Redis reads at the lowest / highest level, measured with "
          "pg_stat_database and INFO stats, background work included: at c=1 a read is a round trip, above it "
          "the scripts of calls sent together share one; CPU: every process of the gateway; 'busy': the share of "
          "all the machine's cores in use during the run, and 'machine/call' that CPU, every process's, per call)")


def _busy(row: Row) -> str:
    """The share of the machine's cores busy during the gateway run."""
    return "-" if row.costs is None else f"{row.costs.machine_busy:.0%}"


def _machine_ms(row: Row) -> str:
    """The machine's busy CPU, every process's, per call, in ms."""
    return _figure(row.per_call(row.costs.machine_busy_s * 1000 if row.costs else None), ".2f")


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(rows: list[Row], statuses: list[int], events: list[dict[str, object]], gateway_log: str) -> bool:
    by_name = {row.name: row for row in rows}
    print("\ngoals:")
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
        cpu = c64.per_call(c64.costs.cpu_s if c64.costs else None) or float("nan")  # every process
        check("gateway CPU per call <= 0.2 ms at concurrency 64", cpu <= 0.0002, f"{cpu * 1000:.3f} ms")
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
    return ok


if __name__ == "__main__":
    main()
