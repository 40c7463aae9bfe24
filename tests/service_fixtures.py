"""Real services for tests: a throwaway PostgreSQL cluster and Redis server on loopback ports.

Loaded as a pytest plugin. A missing binary skips the tests that need it, unless
``COSTWARDEN_REQUIRE_SERVICES=1`` or ``CI=true`` is set, when it fails them instead. Readiness is
awaited by polling (``pg_isready``, ``PING``), never by sleeping a fixed time.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

READY_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05


def services_required() -> bool:
    """Whether a missing service must fail the run rather than skip (CI)."""
    return os.environ.get("COSTWARDEN_REQUIRE_SERVICES") == "1" or os.environ.get("CI", "").lower() == "true"


def missing_service(what: str) -> NoReturn:
    """Skip, or fail when services are required."""
    message = f"{what} is not installed"
    if services_required():
        pytest.fail(f"{message} (required: COSTWARDEN_REQUIRE_SERVICES=1 or CI=true)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``ready`` until it holds; fail with the service's log if it dies or times out."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            output = log.read_text(errors="replace") if log.exists() else ""
            state = f"exited with {process.returncode}" if process.returncode is not None else "timed out"
            pytest.fail(f"{what} {state}:\n{output[-4000:]}")
        time.sleep(POLL_INTERVAL_S)  # polling interval, not synchronization


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a server we started and reap it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _pg_user() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` (or ``nobody``) user then."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid}
    pytest.fail("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _pg_isready(bindir: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q"],
        check=False,
    )
    return result.returncode == 0


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL cluster for the session; yields the URL of its ``costwarden`` database."""
    bindir = _pg_bindir()
    if bindir is None:
        missing_service("PostgreSQL (initdb)")
    as_user = _pg_user()
    base = Path(tempfile.mkdtemp(prefix="costwarden-pg-"))
    try:
        if as_user:
            os.chown(base, as_user["user"], as_user["group"])
        data, log = base / "data", base / "postgres.log"
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            check=True, capture_output=True, **as_user,
        )
        port = free_port()
        with open(log, "wb") as log_file:
            if as_user:
                os.chown(log, as_user["user"], as_user["group"])
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={base}", "-c", "fsync=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                stdout=log_file, stderr=subprocess.STDOUT, **as_user,
            )
        try:
            wait_until(lambda: _pg_isready(bindir, port), "PostgreSQL", server, log)
            subprocess.run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "costwarden"],
                check=True, capture_output=True,
            )
            yield f"postgresql://postgres@127.0.0.1:{port}/costwarden"
        finally:
            stop(server, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _admin_execute(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())  # the names are generated here, not taken from input


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A new, empty database in the session's cluster for one test; dropped after it."""
    name = "cw_" + uuid.uuid4().hex[:16]
    _admin_execute(postgres_url, f"CREATE DATABASE {name}")
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin_execute(postgres_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PostgresServer:
    """A PostgreSQL cluster of one test's own that the test may stop as a crash would (``pg_ctl
    stop -m immediate``: SIGQUIT to the postmaster) and start again on the same port and data."""

    def __init__(self, bindir: Path, base: Path, as_user: dict[str, Any]) -> None:
        self.bindir, self.base, self.as_user, self.port = bindir, base, as_user, free_port()
        self.data, self.log = base / "data", base / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/costwarden"

    def create(self) -> None:
        if self.as_user:
            os.chown(self.base, self.as_user["user"], self.as_user["group"])
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], check=True, capture_output=True, **self.as_user)
        self.start()
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "costwarden"], check=True, capture_output=True)

    def start(self) -> None:
        with open(self.log, "ab") as log_file:
            if self.as_user:
                os.chown(self.log, self.as_user["user"], self.as_user["group"])
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.base}",
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=100"],
                stdout=log_file, stderr=subprocess.STDOUT, **self.as_user,
            )
        wait_until(lambda: _pg_isready(self.bindir, self.port), "PostgreSQL", self.process, self.log)

    def stop_immediately(self) -> None:
        """Immediate shutdown: connections are cut, nothing is flushed; the next start recovers."""
        assert self.process is not None
        stop(self.process, signal.SIGQUIT)


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster for one test, which it may stop and start again."""
    bindir = _pg_bindir()
    if bindir is None:
        missing_service("PostgreSQL (initdb)")
    base = Path(tempfile.mkdtemp(prefix="costwarden-pg-"))
    server = PostgresServer(bindir, base, _pg_user())
    try:
        server.create()
        yield server
    finally:
        if server.process is not None:
            stop(server.process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(base, ignore_errors=True)


# -- Redis ----------------------------------------------------------------------------------------


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A fresh Redis server for the session, without persistence; yields ``redis://...``."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("redis-server")
    base = Path(tempfile.mkdtemp(prefix="costwarden-redis-"))
    log = base / "redis.log"
    port = free_port()
    try:
        with open(log, "wb") as log_file:
            server = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(base)],
                stdout=log_file, stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: _redis_ping(port), "redis-server", server, log)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


class RedisServer:
    """A Redis server of one test's own, without persistence, that the test may restart (empty)
    or kill -9 and start again on the same port."""

    def __init__(self, binary: str, base: Path) -> None:
        self.binary, self.base, self.port = binary, base, free_port()
        self.log = base / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.log, "ab") as log_file:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.base)],
                stdout=log_file, stderr=subprocess.STDOUT,
            )
        wait_until(lambda: _redis_ping(self.port), "redis-server", self.process, self.log)

    def kill(self) -> None:
        """kill -9: the server and everything in it are gone."""
        assert self.process is not None
        stop(self.process, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again: without persistence it comes back empty."""
        assert self.process is not None
        stop(self.process)
        self.start()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh Redis server for one test, which it may restart or kill."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("redis-server")
    base = Path(tempfile.mkdtemp(prefix="costwarden-redis-"))
    server = RedisServer(binary, base)
    try:
        server.start()
        yield server
    finally:
        if server.process is not None:
            stop(server.process)
        shutil.rmtree(base, ignore_errors=True)


# -- Ledger URLs ----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.service)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger database URL per test, for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url
