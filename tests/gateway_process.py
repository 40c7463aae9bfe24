"""``costwarden serve`` as a process of its own, for tests that kill it with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx


def poll(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Wait until ``check()`` holds; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)  # polling interval, not synchronization
    return time.monotonic() - start


class GatewayProcess:
    """A gateway on ``port`` serving ``policy`` on the ledger ``db_url``; ``args`` and ``env`` add
    serve options and variables."""

    def __init__(self, policy: Path, db_url: str, port: int, log: Path, *, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.args = [sys.executable, "-m", "costwarden", "serve", "--policy", str(policy), "--db", db_url,
                     "--port", str(port), *args]
        self.env = {**os.environ, "OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)

    def wait_ready(self, timeout_s: float = 60) -> None:
        poll(self._ready, timeout_s, f"gateway ready ({self.log})")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
