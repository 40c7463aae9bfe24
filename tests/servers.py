"""Real servers on loopback for tests: uvicorn apps in threads, on sockets bound before start."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

# A server asked to stop cancels what still runs after this long (a request its client abandoned
# mid-response), then shuts its app down; a thread alive well after that is a hung shutdown.
GRACE_S = 5.0
STOP_S = 30.0


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(app: Any, **config: Any) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL once it accepts connections. Fails
    if the server has not stopped ``STOP_S`` after it was asked to, rather than leaving it running
    (its background work would go on against servers the tests have stopped)."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    config.setdefault("timeout_graceful_shutdown", GRACE_S)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **config))
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # server.started flips once the lifespan completed and the socket listens
    while not server.started and thread.is_alive():
        started.wait(0.01)
    if failure or not server.started:
        raise RuntimeError(f"server did not start: {failure[0] if failure else 'unknown'}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_S)
        sock.close()
        if thread.is_alive():
            server.force_exit = True  # let the thread end with the process, then say so
            raise RuntimeError(f"the server on port {port} did not stop within {STOP_S:g} s of being asked to")
        if failure:
            raise RuntimeError(f"the server on port {port} failed: {failure[0]!r}") from failure[0]
