"""A local durable spool: append-only journal files of ledger rows the database could not take.

Each process appends to a journal of its own, ``<time>-<pid>.cwspool``, and holds an exclusive
``flock`` on it for as long as it may still append to it or replay it, so that another process
(a second worker, or the next start after a ``kill -9``) can tell a journal still in use from
one left behind: the kernel drops the lock of a dead process. A journal is named only once it is
locked (it is created under a temporary name), so a scan never takes a journal being born.

A record is ``length, crc32, JSON``; an append returns once the record is written and synced
(``fsync``), and appends that arrive together share one sync (group commit). A record cut short
by a crash or a full disk fails its checksum and ends the journal's readable part; after a failed
append the journal is cut back to its last whole record and no longer appended to.

Replaying is the caller's (``outage.py``): ``rotate`` closes the journal being appended to and
hands it over with any left behind by dead processes; ``finish`` deletes one once its rows are in
the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from costwarden.ledger.queue_items import Row, RowKind

log = logging.getLogger(__name__)
SUFFIX = ".cwspool"
RECORD_HEADER = struct.Struct(">II")  # body length, crc32 of the body
TIME_COLUMNS = frozenset({"admitted_at", "finished_at", "at"})  # aware UTC datetimes in rows
SpooledRow = tuple[RowKind, Row]


class SpoolError(OSError):
    """A journal could not be written or synced (a full or read-only disk)."""


def encode(kind: RowKind, row: Row) -> bytes:
    """One record: a row and the table it goes to."""
    values = {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}
    body = json.dumps([str(kind), values], separators=(",", ":"), ensure_ascii=False).encode()
    return RECORD_HEADER.pack(len(body), zlib.crc32(body)) + body


def decode(data: bytes) -> tuple[list[SpooledRow], int]:
    """The whole records at the start of ``data``, and how many bytes they take; reading stops
    at the first record cut short or damaged."""
    records: list[SpooledRow] = []
    offset = 0
    while offset + RECORD_HEADER.size <= len(data):
        size, crc = RECORD_HEADER.unpack_from(data, offset)
        body = data[offset + RECORD_HEADER.size:offset + RECORD_HEADER.size + size]
        if len(body) < size or zlib.crc32(body) != crc:
            break
        kind, values = json.loads(body)
        records.append((RowKind(kind), _row(values)))
        offset += RECORD_HEADER.size + size
    return records, offset


def _row(values: dict[str, Any]) -> Row:
    return {key: datetime.fromisoformat(value) if key in TIME_COLUMNS and isinstance(value, str) else value
            for key, value in values.items()}


@dataclass(eq=False)
class Journal:
    """One journal file, open and locked by this process."""

    path: Path
    fd: int
    size: int = 0
    broken: bool = False  # an append failed: never appended to again

    def read(self) -> list[SpooledRow]:
        """Every whole record; a damaged tail is reported and left out."""
        data = Path(self.path).read_bytes()
        records, used = decode(data)
        if used < len(data):
            log.warning("ledger spool %s: %d bytes at its end are cut short or damaged and were skipped "
                        "(an append that never completed)", self.path, len(data) - used)
        return records

    def append(self, data: bytes) -> None:
        """Write and sync ``data``; on failure cut the file back to its last whole record."""
        try:
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
            os.fsync(self.fd)
        except OSError as exc:
            self.broken = True
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise SpoolError(exc.errno, f"ledger spool {self.path}: {exc.strerror or exc}") from exc
        self.size += len(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass(eq=False)
class _Append:
    data: bytes
    done: bool = False
    error: SpoolError | None = None


class Spool:
    """The spool directory of one ledger, as seen by this process; thread-safe. Nothing is
    created on disk before the first append."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._queue: list[_Append] = []
        self._flushing = False
        self._current: Journal | None = None  # the journal appends go to
        self._held: list[Journal] = []  # rotated out, not yet finished

    def append(self, records: Sequence[SpooledRow]) -> None:
        """Write ``records`` durably (synced before this returns); raises SpoolError if they are not.
        Blocks on disk I/O: call it from a thread."""
        entry = _Append(b"".join(encode(kind, row) for kind, row in records))
        with self._lock:
            self._queue.append(entry)
            while not entry.done:
                if self._flushing:
                    self._flushed.wait()
                else:
                    self._flush()
        if entry.error is not None:  # whichever thread wrote it: every caller of a failed write hears
            raise entry.error

    def _flush(self) -> None:
        """Write every queued append with one sync (called holding the lock, which it releases
        while it writes)."""
        batch, self._queue = self._queue, []
        self._flushing = True
        error: SpoolError | None = None
        try:
            journal = self._journal()
            self._lock.release()
            try:
                journal.append(b"".join(entry.data for entry in batch))
            finally:
                self._lock.acquire()
        except SpoolError as exc:
            error = exc
        except OSError as exc:  # the directory or the journal could not be created
            error = SpoolError(exc.errno, f"ledger spool {self.directory}: {exc.strerror or exc}")
        for entry in batch:
            entry.done, entry.error = True, error
        self._flushing = False
        self._flushed.notify_all()

    def _journal(self) -> Journal:
        if self._current is not None and self._current.broken:
            self._held.append(self._current)
            self._current = None
        if self._current is None:
            self._current = create_journal(self.directory)
        return self._current

    @property
    def pending(self) -> bool:
        """Whether this process holds spooled rows not yet finished."""
        with self._lock:
            return bool(self._held) or (self._current is not None and self._current.size > 0) or bool(self._queue)

    def rotate(self) -> list[Journal]:
        """Close the journal being appended to (later appends start a new one) and return it with
        every journal held back or left behind by a dead process, oldest first."""
        with self._lock:
            while self._flushing:
                self._flushed.wait()
            if self._current is not None and (self._current.size > 0 or self._current.broken):
                self._held.append(self._current)
                self._current = None
            held = list(self._held)
        mine = {journal.path for journal in held}
        return sorted(held + [j for j in orphans(self.directory) if j.path not in mine], key=lambda j: j.path.name)

    def finish(self, journal: Journal) -> None:
        """Delete a journal whose rows are all in the database."""
        with contextlib.suppress(FileNotFoundError):
            journal.path.unlink()
        _sync_directory(journal.path.parent)
        journal.close()
        with self._lock:
            if journal in self._held:
                self._held.remove(journal)

    def release(self, journals: Sequence[Journal]) -> None:
        """Give back journals taken by ``rotate`` that were not finished (another attempt later)."""
        with self._lock:
            for journal in journals:
                if journal not in self._held:
                    journal.close()  # a dead process's: found again by the next scan

    def close(self) -> None:
        """Unlock every journal; those with rows stay on disk for the next start."""
        with self._lock:
            journals = [*self._held, *([self._current] if self._current else [])]
            self._held, self._current = [], None
        for journal in journals:
            if journal.size == 0 and not journal.broken:
                with contextlib.suppress(FileNotFoundError):
                    journal.path.unlink()
            journal.close()


def create_journal(directory: Path) -> Journal:
    """A new, empty, locked journal in ``directory`` (created if need be)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}"
    temporary = directory / f"{name}.new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = directory / f"{name}{SUFFIX}"
        os.rename(temporary, path)
        _sync_directory(directory)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return Journal(path, fd)


def orphans(directory: Path) -> list[Journal]:
    """Journals in ``directory`` that no living process holds, each now locked by this one."""
    found = []
    for path in _journal_paths(directory):
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:  # finished meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a living process's
            os.close(fd)
            continue
        if not path.exists():  # finished between the listing and the lock
            os.close(fd)
            continue
        found.append(Journal(path, fd, os.fstat(fd).st_size))
    return found


def _journal_paths(directory: Path) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(SUFFIX):
            yield directory / name


def _sync_directory(directory: Path) -> None:
    """Make a file's creation, renaming or removal durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
