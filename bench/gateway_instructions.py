"""Machine instructions the gateway's process spends per call, under callgrind.

Wall-clock CPU per call (``bench/gateway.py``) moves by 10-20 % with whatever else the machine
runs; an instruction count does not. This starts the mock upstream as its own process, then, for
each of two call counts, a fresh gateway (``costwarden serve``, embedded: in-process counters and
a SQLite ledger, the policy of ``bench/gateway.py``) under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0``. The same keep-alive generator as ``bench/gateway.py`` sends it that many
unary chat calls at the given concurrency, then the gateway is stopped and the instructions of
its process are read. Start-up and shutdown are the same in both runs, so

    instructions per call = (total of the larger run - total of the smaller) / (difference in calls)

The ledger's writer process runs outside valgrind: slowed down 50 times, it took longer than the
ledger's commit deadline (2 s) to start, and calls were refused. Its CPU is in ``bench/gateway.py``.

Run (about four minutes; valgrind slows the gateway about 50 times):

    PYTHONPATH=src python bench/gateway_instructions.py [--calls 400,2400] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway import (
    CAP_LIMIT_USD,
    CHAT,
    POLICY,
    cli,
    create_key,
    free_port,
    http_request,
    load,
    process,
    wait_for_port,
)

STARTUP_TIMEOUT_S = 600.0  # the gateway's imports and start-up, under valgrind
SHUTDOWN_TIMEOUT_S = 300.0


def instructions(out: Path) -> int:
    """The instructions counted in callgrind's output file ``out``."""
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def run(calls: int, concurrency: int, tmp: Path, policy: Path, env: dict[str, str]) -> tuple[int, int]:
    """Serve ``calls`` calls in a fresh gateway under callgrind; (instructions, calls answered 200)."""
    tmp.mkdir()
    db_url = f"sqlite:///{tmp}/ledger.db"
    key = create_key(db_url, policy, "BENCH", env)
    port = free_port()
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out"]
    serve = cli("serve", "--policy", str(policy), "--db", db_url, "--port", str(port), "--spool", str(tmp / "spool"))
    with (tmp / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen([*valgrind, *serve], stdout=log, stderr=subprocess.STDOUT,
                                   env={**env, "PYTHONHASHSEED": "0"})
        try:
            wait_for_port(port, gateway, "gateway", timeout=STARTUP_TIMEOUT_S)
            request = http_request(port, "/v1/chat/completions", CHAT, key)
            result = asyncio.run(load(port, request, concurrency, seconds=1e9, total=calls))
        finally:
            gateway.send_signal(signal.SIGINT)
            gateway.wait(timeout=SHUTDOWN_TIMEOUT_S)
    return instructions(tmp / "callgrind.out"), result.statuses.count(200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=lambda s: [int(x) for x in s.split(",")], default=[400, 2400],
                        help="the two call counts (default 400,2400)")
    # Not 64: under valgrind a loop pass over 64 calls in flight took long enough on a busy machine
    # that the ledger's commit deadline (2 s) ran out, and calls were refused.
    parser.add_argument("--concurrency", type=int, default=16, help="connections calling at once (default 16)")
    parser.add_argument("--keep", type=Path, help="a new directory to keep callgrind's output files in "
                                                    "(for callgrind_annotate), one per run")
    args = parser.parse_args()
    small, large = args.calls
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-ant-bench"}
    with tempfile.TemporaryDirectory(prefix="costwarden-instructions-") as name:
        tmp = args.keep or Path(name)
        tmp.mkdir(exist_ok=True)
        mock_port = free_port()
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY.format(mock=f"http://127.0.0.1:{mock_port}", cap=CAP_LIMIT_USD))
        with process(cli("mock-upstream", "--port", str(mock_port)), tmp / "mock.log", env) as mock:
            wait_for_port(mock_port, mock, "mock upstream")
            totals = []
            for calls in (small, large):
                began = time.monotonic()
                total, ok = run(calls, args.concurrency, tmp / f"run-{calls}", policy, env)
                if ok != calls:
                    log = (tmp / f"run-{calls}" / "gateway.log").read_text(errors="replace")
                    raise SystemExit(f"{calls - ok} of {calls} calls failed; the gateway's log ends:\n{log[-3000:]}")
                print(f"{calls} calls: {total:,} instructions ({time.monotonic() - began:.0f} s)", flush=True)
                totals.append(total)
    print(f"instructions per call: {(totals[1] - totals[0]) / (large - small):,.0f}")


if __name__ == "__main__":
    sys.exit(main())
