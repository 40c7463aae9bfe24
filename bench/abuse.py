"""Abuse run: a real `costwarden serve` under slow connections and hostile attribution values.

    PYTHONPATH=src python bench/abuse.py [--slow 10000] [--ids 400] [--stalled 1000]

Measures, on the gateway process (from /proc): resident memory and open descriptors before, at
the peak, and after each phase; whether real calls still succeed while the abuse goes on; and
the ledger's size. Phases:

1. ``--slow`` connections each send a half request head and stop (slowloris). Real calls are made
   while they are held; the run then waits for the header timeout to cut them.
2. ``--stalled`` connections each send a complete head and part of the body; they must be answered
   408 at the body timeout.
3. ``--ids`` calls with distinct 200 KB X-User-ID values, then as many with distinct unknown
   X-Team-ID values: all must be refused with 400, and neither memory nor the ledger may grow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from gateway import cli, create_key, free_port, process, wait_for_port

POLICY = """
version: 1
upstreams:
  openai: {{type: openai, base_url: "{mock}/v1", api_key_env: OPENAI_API_KEY}}
  anthropic: {{type: anthropic, base_url: "{mock}", api_key_env: ANTHROPIC_API_KEY}}
departments:
  BENCH:
    budgets: [{{limit: 1000, period: monthly, action: reject}}]
    teams: {{DESK: {{}}}}
"""
CHAT = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 10, 10


def proc_figures(pid: int) -> tuple[float, int]:
    """(resident MB, open descriptors) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def show(label: str, pid: int) -> tuple[float, int]:
    rss, fds = proc_figures(pid)
    print(f"  {label:<48} rss {rss:7.1f} MB   fds {fds:6,}", flush=True)
    return rss, fds


def real_calls(port: int, key: str, count: int) -> tuple[int, float]:
    """(successes, slowest seconds) of ``count`` calls, each on a new connection."""
    ok, slowest = 0, 0.0
    for _ in range(count):
        started = time.monotonic()
        try:
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=30,
                               headers={"Authorization": f"Bearer {key}"})
            ok += reply.status_code == 200
        except httpx.HTTPError:
            pass
        slowest = max(slowest, time.monotonic() - started)
    return ok, slowest


def open_many(port: int, count: int, payload: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(payload)
        sockets.append(sock)
    return sockets


def wait_until(pid: int, fds_at_most: int, within_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if proc_figures(pid)[1] <= fds_at_most:
            return time.monotonic() - started
        time.sleep(0.2)
    return float("nan")


def slowloris(port: int, pid: int, key: str, count: int) -> None:
    print(f"\n1. {count:,} half-sent request heads", flush=True)
    _, base_fds = show("before", pid)
    started = time.monotonic()
    sockets = open_many(port, count, b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Half: ")
    print(f"  opened in {time.monotonic() - started:.1f} s", flush=True)
    show("while held", pid)
    ok, slowest = real_calls(port, key, 20)
    print(f"  real calls meanwhile: {ok}/20 answered 200, slowest {slowest * 1000:.0f} ms", flush=True)
    cut = wait_until(pid, base_fds + 50, HEADER_TIMEOUT_S * 3)
    print(f"  descriptors back to baseline {cut:.1f} s after the last real call", flush=True)
    show("after the header timeout", pid)
    for sock in sockets:
        sock.close()


def stalled_bodies(port: int, pid: int, key: str, count: int) -> None:
    print(f"\n2. {count:,} bodies that never finish", flush=True)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"model\": ").encode()
    _, base_fds = show("before", pid)
    sockets = open_many(port, count, head)
    show("while held", pid)
    answered = 0
    for sock in sockets:
        sock.settimeout(BODY_TIMEOUT_S * 3)
        with contextlib.suppress(OSError):
            answered += sock.recv(64).startswith(b"HTTP/1.1 408")
        sock.close()
    print(f"  answered 408: {answered:,}/{count:,}", flush=True)
    wait_until(pid, base_fds + 50, 10)
    show("after", pid)


def hostile_ids(port: int, pid: int, key: str, count: int, db: Path) -> None:
    print(f"\n3. {count} distinct 200 KB X-User-ID values, {count} unknown teams", flush=True)
    rss_before, _ = show("before", pid)
    size_before = sum(f.stat().st_size for f in db.parent.glob(db.name + "*"))
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            for header, value in (("X-User-ID", f"{i}-" + "u" * 200_000), ("X-Team-ID", f"TEAM-{i}")):
                reply = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT,
                                    headers={"Authorization": f"Bearer {key}", header: value})
                statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
    rss_after, _ = show("after", pid)
    size_after = sum(f.stat().st_size for f in db.parent.glob(db.name + "*"))
    print(f"  statuses {statuses}; rss {rss_after - rss_before:+.1f} MB; "
          f"ledger files {size_before / 1e6:.2f} MB -> {size_after / 1e6:.2f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=10_000)
    parser.add_argument("--stalled", type=int, default=1_000)
    parser.add_argument("--ids", type=int, default=400)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"open-file limit: {soft:,} soft, {hard:,} hard (raised to {hard:,} here; serve raises its own)")
    with tempfile.TemporaryDirectory(prefix="costwarden-abuse-") as name:
        tmp = Path(name)
        env = {**os.environ, "OPENAI_API_KEY": "sk-abuse", "ANTHROPIC_API_KEY": "sk-ant-abuse"}
        mock_port, port = free_port(), free_port()
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY.format(mock=f"http://127.0.0.1:{mock_port}"))
        db = tmp / "ledger.db"
        key = create_key(f"sqlite:///{db}", policy, "BENCH", env)
        with process(cli("mock-upstream", "--port", str(mock_port)), tmp / "mock.log", env) as mock, \
                process(cli("serve", "--policy", str(policy), "--db", f"sqlite:///{db}", "--port", str(port),
                            "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S)),
                        tmp / "gateway.log", env) as gateway:
            wait_for_port(mock_port, mock, "mock upstream")
            wait_for_port(port, gateway, "gateway")
            ok, _ = real_calls(port, key, 20)  # warm up
            print(f"gateway pid {gateway.pid}; warm-up calls {ok}/20")
            slowloris(port, gateway.pid, key, args.slow)
            stalled_bodies(port, gateway.pid, key, args.stalled)
            hostile_ids(port, gateway.pid, key, args.ids, db)
            ok, slowest = real_calls(port, key, 20)
            print(f"\nreal calls at the end: {ok}/20, slowest {slowest * 1000:.0f} ms")


if __name__ == "__main__":
    main()
