"""The ledger spool's contract: what was appended is read back whole and in order until it is
finished, across crashes, torn tails, concurrent appenders and other processes' journals."""

from __future__ import annotations

import shutil
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from costwarden.ledger.engine import normalize_url
from costwarden.ledger.ledger import spool_directory
from costwarden.ledger.queue_items import RowKind
from costwarden.ledger.spool import SUFFIX, Spool, SpooledRow, SpoolError, decode, encode

T0 = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)


def record(n: int) -> SpooledRow:
    kinds = list(RowKind)
    kind = kinds[n % len(kinds)]
    row: dict[str, object] = {"id": f"req_{n}", "department": "HR", "tags": '{"p":"é"}', "input_tokens": n,
                              "stream": n % 2 == 0, "team": None}
    row["at" if kind is RowKind.REJECTION else "admitted_at"] = T0 + timedelta(microseconds=n)
    return kind, row


def on_disk(directory: Path) -> list[SpooledRow]:
    """Every whole record of every journal, oldest journal first, read without any lock."""
    found: list[SpooledRow] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        found += decode(path.read_bytes())[0]
    return found


def test_a_record_round_trips_exactly() -> None:
    for n in range(6):
        data = encode(*record(n))
        assert decode(data) == ([record(n)], len(data))
        assert decode(data[:-1]) == ([], 0)  # cut short: not read
        damaged = bytearray(data)
        damaged[-2] ^= 0xFF
        assert decode(bytes(damaged)) == ([], 0)  # checksum


class SpoolMachine(RuleBasedStateMachine):
    """One directory, a process's spool in it that may crash and be replaced by the next start."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="cw-spool-")) / "spool"
        self.spool = Spool(self.directory)
        self.expected: list[SpooledRow] = []
        self.next = 0

    @rule(size=st.integers(1, 5))
    def append(self, size: int) -> None:
        batch = [record(self.next + i) for i in range(size)]
        self.next += size
        self.spool.append(batch)
        self.expected += batch

    @rule()
    def drain(self) -> None:
        journals = self.spool.rotate()
        replayed: list[SpooledRow] = []
        for journal in journals:
            replayed += journal.read()
            self.spool.finish(journal)
        assert replayed == self.expected
        self.expected = []
        assert not self.spool.pending

    @rule(torn=st.booleans())
    def crash(self, torn: bool) -> None:
        current = self.spool._current
        if torn and current is not None:  # a process killed in the middle of an append
            with open(current.path, "ab") as journal:
                journal.write(encode(*record(10_000))[:7])
        self.spool.close()
        self.spool = Spool(self.directory)

    @invariant()
    def everything_unfinished_is_on_disk_in_order(self) -> None:
        assert on_disk(self.directory) == self.expected

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.directory.parent, ignore_errors=True)


TestSpoolMachine = SpoolMachine.TestCase
TestSpoolMachine.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)


def test_concurrent_appends_all_land_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    per_thread, threads = 40, 8

    def appender(t: int) -> None:
        for i in range(per_thread):
            spool.append([record(t * 1000 + i)])

    workers = [threading.Thread(target=appender, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stored = on_disk(tmp_path / "spool")
    assert sorted(row["id"] for _, row in stored) == sorted(f"req_{t * 1000 + i}" for t in range(threads)
                                                            for i in range(per_thread))
    spool.close()


def test_a_living_spools_journal_is_never_taken(tmp_path: Path) -> None:
    living, other = Spool(tmp_path / "s"), Spool(tmp_path / "s")
    living.append([record(1)])
    assert other.rotate() == []  # held under its owner's lock
    living.close()  # its owner is gone: the lock with it
    journals = other.rotate()
    assert [journal.read() for journal in journals] == [[record(1)]]
    other.finish(journals[0])
    assert on_disk(tmp_path / "s") == []
    other.close()


def test_an_unwritable_spool_raises_spool_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    spool = Spool(tmp_path / "file" / "spool")
    with pytest.raises(SpoolError):
        spool.append([record(1)])
    assert not spool.pending


def test_each_database_spools_in_a_directory_of_its_own(tmp_path: Path) -> None:
    sqlite_db = normalize_url(f"sqlite:///{tmp_path / 'a.db'}")
    beside = spool_directory(sqlite_db, None)
    assert beside.parent == tmp_path / "a.db-spool"
    assert spool_directory(normalize_url(f"sqlite:///{tmp_path / 'b.db'}"), tmp_path / "s").parent == tmp_path / "s"
    one = spool_directory(normalize_url("postgresql://u:secret1@db:5432/one"), None)
    assert one.parent == Path("costwarden-spool").absolute()
    assert one == spool_directory(normalize_url("postgresql://u:secret2@db:5432/one"), None)  # not the password
    assert one != spool_directory(normalize_url("postgresql://u:secret1@db:5432/two"), None)
