"""The SQLite ledger's writer process: its program, its framing, and that it runs on the standard
library alone."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from costwarden.ledger import writer_process
from costwarden.ledger.writer_process import FAILED, ROW_REFUSED, Statement

INSERT = "INSERT INTO t (id, v) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
INSERT_ONE = "INSERT INTO t (id, v) VALUES (?, ?) ON CONFLICT DO NOTHING"


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "w.db")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    return path


def rows(path: str) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.execute("SELECT id, v FROM t ORDER BY id"))


def test_frames_survive_any_split() -> None:
    messages = [(1, [("SELECT ?", [1])]), (2, None, ""), (3, "error", "x" * 300)]
    data = b"".join(writer_process.frame(m) for m in messages)
    for split in range(len(data) + 1):
        buffer = bytearray(data[:split])
        got = writer_process.unframe(buffer)
        buffer += data[split:]
        got += writer_process.unframe(buffer)
        assert [tuple(m) for m in got] == messages
        assert not buffer


def test_commits_are_durable_and_a_batch_is_one_transaction(db: str) -> None:
    with contextlib.closing(writer_process.connect(db, 1000)) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: synced before COMMIT returns
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        statements: list[Statement] = [(INSERT, ["a", 1, "b", 2])]
        assert writer_process.commit(conn, statements) == (None, "")
        refused: list[Statement] = [(INSERT, ["c", 3, "e", 4]), (INSERT_ONE, ["d", None])]
        kind, message = writer_process.commit(conn, refused)
        assert kind == ROW_REFUSED and "IntegrityError" in message
    assert rows(db) == [("a", 1), ("b", 2)]  # "c" rolled back with the refused row


def test_a_locked_database_fails_the_batch(db: str) -> None:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    conn = writer_process.connect(db, 50)
    try:
        kind, message = writer_process.commit(conn, [(INSERT_ONE, ["a", 1])])
        assert kind == FAILED and "locked" in message
        assert not conn.in_transaction
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        conn.close()
    assert rows(db) == []


def test_serve_answers_each_batch_once_committed(db: str) -> None:
    to_child, source = os.pipe()
    sink, from_child = os.pipe()
    server = threading.Thread(target=writer_process.serve, args=(db, 1000, to_child, from_child))
    server.start()
    try:
        os.write(source, writer_process.frame((7, [(INSERT_ONE, ["x", 1])])))
        os.write(source, writer_process.frame((8, [(INSERT, ["x", 2, "y", 3])])))
        buffer = bytearray()
        replies: list[tuple[int, str | None, str]] = []
        while len(replies) < 2:
            buffer += os.read(sink, 4096)
            replies += [tuple(r) for r in writer_process.unframe(buffer)]
        assert replies == [(7, None, ""), (8, None, "")]
        assert rows(db) == [("x", 1), ("y", 3)]  # the repeated id changed nothing
    finally:
        os.close(source)  # end of input: serve returns
        server.join(timeout=10)
        for fd in (to_child, sink, from_child):
            os.close(fd)
    assert not server.is_alive()


def test_the_program_runs_without_the_package(db: str) -> None:
    # -I -S: no site packages, no environment, no script directory on the path; it imports the
    # standard library only, so that it starts in milliseconds.
    probe = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='probe'); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('costwarden', 'sqlalchemy')))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe, writer_process.__file__],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    child = subprocess.run([sys.executable, "-I", "-S", writer_process.__file__, db, "1000"],
                           input=writer_process.frame((1, [(INSERT_ONE, ["z", 9])])), capture_output=True,
                           check=True, timeout=30)
    assert writer_process.unframe(bytearray(child.stdout)) == [(1, None, "")]
    assert rows(db) == [("z", 9)]


def test_bad_arguments_print_the_usage() -> None:
    assert writer_process.main([]) == 2


def test_only_batches_of_write_ahead_rows_skip_the_disk_sync() -> None:
    from costwarden.ledger.writer_process import write_ahead_only

    ahead: Statement = ('INSERT INTO inflight (id) VALUES (?)', [])
    event: Statement = ('INSERT INTO usage_events (id) VALUES (?)', [])
    assert write_ahead_only([ahead, ahead])
    assert not write_ahead_only([ahead, event])
    assert not write_ahead_only([event])


def test_what_a_parent_that_is_gone_sent_is_still_committed() -> None:
    commits: list[list[Statement]] = []

    def commit(statements: list[Statement]) -> tuple[str | None, str]:
        commits.append(statements)
        return None, ""

    to_child, source = os.pipe()
    sink, from_child = os.pipe()
    os.close(sink)  # the parent is gone: answering it breaks the pipe
    first: Statement = ("INSERT INTO inflight (id) VALUES (?)", ["a"])
    second: Statement = ("INSERT INTO usage_events (id) VALUES (?)", ["a"])
    os.write(source, writer_process.frame((1, [first])) + writer_process.frame((2, [second])))
    os.close(source)  # end of input
    try:
        writer_process.answer(commit, to_child, from_child)
    finally:
        os.close(to_child)
        os.close(from_child)
    assert commits == [[first], [second]]
