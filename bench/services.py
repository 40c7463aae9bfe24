"""Throwaway PostgreSQL and Redis servers on loopback, in temporary directories.

The benchmarks start their own servers when no URL is given, the same way the tests do
(``tests/service_fixtures.py``): ``initdb`` a cluster, run ``postgres`` on a free port (as the
``postgres`` or ``nobody`` user when run as root, which PostgreSQL refuses), and ``redis-server``
without persistence. Readiness is polled. Standard library only, plus psycopg for the counters.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``ready``; raise with the server's log if it exits or does not get ready in time."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            output = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{what} did not start:\n{output[-4000:]}")
        time.sleep(0.05)  # polling interval


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return {"user": entry.pw_uid, "group": entry.pw_gid}
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


@contextlib.contextmanager
def postgres(durable: bool = True) -> Iterator[str]:
    """A new PostgreSQL cluster; yields the URL of its ``costwarden`` database. ``durable``:
    PostgreSQL's defaults (``fsync=on``, synchronous commits), as in production."""
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL (initdb) is not installed")
    as_user = _as_user()
    base = Path(tempfile.mkdtemp(prefix="costwarden-bench-pg-"))
    try:
        if as_user:
            os.chown(base, as_user["user"], as_user["group"])
        data, log, port = base / "data", base / "postgres.log", free_port()
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--locale=C", "--no-sync"], check=True, capture_output=True, **as_user)
        settings = [] if durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with open(log, "wb") as out:
            if as_user:
                os.chown(log, as_user["user"], as_user["group"])
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={base}", "-c", "max_connections=200", *settings],
                stdout=out, stderr=subprocess.STDOUT, **as_user)
        try:
            wait_until(lambda: _pg_isready(bindir, port), "PostgreSQL", server, log)
            subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                            "costwarden"], check=True, capture_output=True)
            yield f"postgresql://postgres@127.0.0.1:{port}/costwarden"
        finally:
            stop(server, signal.SIGINT)  # fast shutdown
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _pg_isready(bindir: Path, port: int) -> bool:
    return subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q"],
                          check=False).returncode == 0


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """A new Redis server without persistence; yields its ``redis://`` URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    base = Path(tempfile.mkdtemp(prefix="costwarden-bench-redis-"))
    log, port = base / "redis.log", free_port()
    try:
        with open(log, "wb") as out:
            server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(base)],
                                      stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _redis_ping(port), "redis-server", server, log)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def pg_commits(url: str) -> int:
    """Committed transactions of the database at ``url`` so far (``pg_stat_database.xact_commit``),
    as reported by every backend: a busy backend reports at most once a second, an idle one ten
    seconds after its last report (PostgreSQL 15's ``PGSTAT_IDLE_INTERVAL``), an exiting one at
    once. Reading it is a transaction too, counted once this connection has ended."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


PG_REPORT_S = 11.0  # PGSTAT_IDLE_INTERVAL (10 s), and a margin


def pg_settled_commits(url: str, quiet_s: float = PG_REPORT_S) -> int:
    """``pg_commits`` once every backend has reported what it did before this call: waits
    ``quiet_s`` first (the load must be over)."""
    time.sleep(quiet_s)  # until idle backends have reported, not a synchronization
    return pg_commits(url)


def pg_server_pid(url: str) -> int | None:
    """The postmaster of the server at ``url``, if it runs on this machine (the parent of this
    connection's backend in ``/proc``), else None."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        try:  # while the backend lives
            stat = Path(f"/proc/{row[0]}/stat").read_text()
        except OSError:
            return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def pg_server_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of PostgreSQL's processes: the postmaster's tree (backends,
    WAL writer, checkpointer, autovacuum) and the children it has reaped (exited backends and
    autovacuum workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return tree_cpu_seconds(pid) + (int(fields[13]) + int(fields[14])) / tick


def create_database(url: str, name: str) -> str:
    """A new, empty database beside the one at ``url``; returns its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())  # a name made by the caller, not input
    return url.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def reset_redis_stats(url: str) -> None:
    """Empty Redis's command statistics (``CONFIG RESETSTAT``)."""
    import redis as redis_client

    with redis_client.Redis.from_url(url) as client:
        client.config_resetstat()


def redis_command_count(url: str) -> int:
    """Commands Redis ran since its statistics were reset (the sum of ``INFO commandstats``
    calls, less the ``INFO`` that reads them); Lua scripts count once per ``EVALSHA``."""
    import redis as redis_client

    with redis_client.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(int(entry["calls"]) for name, entry in stats.items() if name != "cmdstat_info")


def redis_client_requests(url: str) -> int:
    """Reads Redis made from its clients' sockets since its statistics were reset (``INFO stats``
    ``total_reads_processed``, less the ``INFO`` that reads it): one per round trip of a lone
    client; commands written together (a pipeline, the scripts of calls sent in one write) share
    one."""
    import redis as redis_client

    with redis_client.Redis.from_url(url) as client:
        return int(client.info("stats")["total_reads_processed"]) - 1


def redis_cpu_seconds(url: str) -> float:
    """User plus system CPU seconds the Redis server has used (``INFO cpu``)."""
    import redis as redis_client

    with redis_client.Redis.from_url(url) as client:
        cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def empty_redis(url: str) -> None:
    import redis as redis_client

    with redis_client.Redis.from_url(url) as client:
        client.flushdb()


def tree_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` and its living descendants (workers, a
    SQLite writer process), from ``/proc``."""
    return sum(own_and_descendants_cpu_seconds(pid))


def machine_cpu_seconds() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine since boot, every core together, from
    ``/proc/stat`` (idle and I/O wait are not busy; steal is, as time this machine could not use)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields)
    return (total - fields[3] - fields[4]) / tick, total / tick


def own_and_descendants_cpu_seconds(pid: int) -> tuple[float, float]:
    """User plus system CPU seconds of process ``pid`` itself, and of its living descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent and child not in tree]
        tree.update(children)
        frontier.extend(children)
    return times.get(pid, 0.0), sum(times.get(member, 0.0) for member in tree - {pid})
