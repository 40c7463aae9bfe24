"""Shared counters in Redis, for any number of gateway replicas.

Every operation that reads or writes several counters is one Lua function (``lua/``, loaded as a
library on Redis 7, run as scripts on Redis 6.2: ``scripts.py``), so a reservation is checked and
held on all its counters atomically. Each one first checks the generation marker
(``<prefix>generation``): a missing one means the server lost its data, and the operation raises
``StoreEmptied``; a different one means another replica rebuilt the store, and this one holds its
in-flight reservations again before it goes on. A counter is one hash per window key;
reservations live in one hash (id -> record) and one sorted set (id by deadline). Decisions use
the times the caller passes; key expiry only collects garbage, and a reservation asks for it only
when its replica does not know its counters kept long enough (``kept.py``). Money crosses the
wire as decimal strings, so counters are exact up to 2**63 nano-dollars.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from costwarden.core.decision import Hold
from costwarden.core.kinds import Unit
from costwarden.core.periods import Window
from costwarden.counters.base import (
    Attempt,
    Conflict,
    Reservation,
    Settlement,
    Snapshot,
    StoreEmptied,
    Threshold,
)
from costwarden.counters.figures import Figures
from costwarden.counters.kept import KeptCounters, keep_targets
from costwarden.counters.script_calls import (
    FunctionsUnavailable,
    Loadable,
    ScriptCalls,
    bulk,
    count_word,
)
from costwarden.counters.scripts import Script, Scripts
from costwarden.errors import StorageError

T = TypeVar("T")
LOAD_BATCH = 500  # windows per load script, so a rebuild never blocks the server for long
EXPIRE_BATCH = 500  # reservations per expire script
RESTORE_BATCH = 200  # reservations per restore script
_EMPTIED, _MOVED = "COSTWARDEN_EMPTIED", "COSTWARDEN_MOVED"
WINDOWS_KEPT = 10_000  # windows (and flags, threshold sets) whose script arguments are remembered (``_words``)
ANSWER_TIMEOUT_S = 2.0  # a connection, a free pooled connection, or an answer: longer means unavailable


HOLDS_KEPT = 4_096  # tuples of holds whose script arguments are remembered (``_pack_holds``)
_BUILDS_TRIED = range(3)  # builds an operation is sent under before it fails (made once: iterated by every one)


# A window as the scripts take it, packed (``script_calls.bulk``): its counter's key, packed and as
# it is; its bucket and span; until when the counter matters (ms; the scripts keep it longer for
# a later deadline), as a number and as text; and its part of a reservation's record (JSON, open
# for the hold's own fields).
_Words = tuple[str, str, str, int, str, str]


@dataclass(slots=True)
class _Packed:
    """A tuple of holds as the scripts take it, packed once (``_pack_holds``): the tuple itself;
    the keys reserve and settle take (the reservations' hash and deadlines' set, then the
    counters'), packed; the reserve script's words; the record's holds; per hold the
    settle script's words before the actual amount; the counters' window keys; the amounts held;
    the counters' keys as they are, and until when each matters (ms), also as the settle script
    takes them; and the latest reservation deadline (ms) for which every counter is known to be
    kept long enough (0: not known), see ``_keep_words``."""

    holds: tuple[Hold, ...]
    keys: str
    reserving: str
    parts: str
    settling: list[str]
    names: list[str]
    amounts: list[int]
    counters: list[str]
    untils: list[int]
    untils_word: str
    horizon: int = 0


@dataclass(slots=True)
class _Held:
    """A reservation this replica holds, and its settlement's arguments that reserving packed
    already: its id, and its tuple of holds packed. Treat as immutable."""

    reservation: Reservation
    id: str
    packed: _Packed


class RedisCounterStore:
    """The shared CounterStore on Redis (7, or 6.2 with scripts alone; a standalone server or
    one hash slot)."""

    def __init__(self, client: Redis, *, key_prefix: str = "cw:", replica: str | None = None) -> None:
        self._client = client
        self._prefix = key_prefix
        self._replica = replica or uuid.uuid4().hex
        self._scripts = Scripts.make()
        self._library = self._scripts.library
        self._functions = True  # called as the library's functions until the server turns out to lack them
        self._calls = ScriptCalls(client)  # the hot path's transport (see ``script_calls.py``)
        self._reservations = f"{key_prefix}reservations"
        self._deadlines = f"{key_prefix}deadlines"
        self._leases = f"{key_prefix}leases"
        self._mark_key = f"{key_prefix}generation"
        self._marker = ""  # the build this store last saw; '' until it first looks
        self._mark_words = bulk(self._mark_key), bulk(self._marker)  # the last key and argument of every script
        self._ledgers = bulk(self._reservations) + bulk(self._deadlines)  # reserve's and settle's first keys
        # This replica's open reservations, to hold again if the server loses them (emptied and
        # rebuilt while the calls are in flight); a settlement still to be retried keeps its entry.
        self._held: dict[str, _Held] = {}
        self._adopting: asyncio.Event | None = None  # set while moving to a new build
        self._sent = 0  # scripts sent and not yet answered
        self._answered: asyncio.Event | None = None  # set when the last of them is answered
        self._figures = Figures()  # what the counters held when this replica last saw them
        self._windows: dict[Window, _Words] = {}  # see ``_words``
        self._by_id: dict[int, tuple[Window, _Words]] = {}  # see ``_words``
        self._rolling: dict[tuple[str, int, int], tuple[str, str, str, str]] = {}  # see ``_words``
        self._packed: dict[int, _Packed] = {}  # see ``_pack_holds``
        self._kept = KeptCounters()  # until when this replica had its counters kept (``kept.py``)
        self._owner = _json(self._replica)  # the records' "o"
        self._flag_words: dict[str, str] = {}  # flag key -> its key, packed
        self._threshold_words: dict[int, tuple[Sequence[Threshold], str, str]] = {}  # see ``_settle``
        # amounts and limits as text and packed (see ``_number``), and units' text by the member's id
        self._numbers: dict[int, tuple[str, str]] = {}
        self._units: dict[int, str] = {}

    @property
    def replica(self) -> str:
        return self._replica

    @property
    def client(self) -> Redis:
        """The Redis client, shared with what keeps other shared state beside the counters."""
        return self._client

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str = "cw:", max_connections: int = 64,
                 replica: str | None = None) -> RedisCounterStore:
        """A store on ``redis://host:port/db`` (or ``rediss://``, ``unix://``).

        The scripts share one pipelined connection (``script_calls.py``); other commands wait for
        one of ``max_connections`` pooled connections rather than opening one per call. A dropped
        connection is retried twice, quickly: the scripts are safe to run again. A server that
        does not answer within ``ANSWER_TIMEOUT_S`` (stopped, partitioned) fails the call then,
        without a retry, which would only wait as long again: a hard-checked call gets its 503 in
        seconds rather than after three long waits.
        """
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=ANSWER_TIMEOUT_S, decode_responses=True,
            socket_connect_timeout=ANSWER_TIMEOUT_S, socket_timeout=ANSWER_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2, supported_errors=(RedisConnectionError,)),
        )
        return cls(Redis.from_pool(pool), key_prefix=key_prefix, replica=replica)

    def _key(self, window: Window) -> str:
        return f"{self._prefix}c:{window.key}"

    def _words(self, window: Window) -> _Words:
        """What the scripts and the reservation records say of ``window``, made once per window:
        known by identity first, as the planner hands the same windows to the calls its plan
        serves (and hashing a window costs more than this lookup); a calendar window by its
        value next, as every call of its period shares it."""
        known = self._by_id.get(id(window))
        if known is not None and known[0] is window:
            return known[1]
        if len(self._by_id) >= WINDOWS_KEPT:
            self._by_id.clear()  # windows gone by
            self._windows.clear()
            self._rolling.clear()
        if window.span == 1:
            words = self._windows.get(window)
            if words is None:
                key, counter, place, head = self._place(window)
                until = _keep_until_ms(window)
                words = self._windows[window] = (
                    key, counter, place, until, str(until),
                    f'{head},"s":"{window.start.isoformat()}","e":"{window.end.isoformat()}"')
        else:  # a rolling window ends when its plan was made: its key, bucket and span outlive it
            where = (window.key, window.bucket, window.span)
            fixed = self._rolling.get(where)
            if fixed is None:
                fixed = self._rolling[where] = self._place(window)
            key, counter, place, head = fixed
            until = _keep_until_ms(window)
            words = (key, counter, place, until, str(until),
                     f'{head},"s":"{window.start.isoformat()}","e":"{window.end.isoformat()}"')
        self._by_id[id(window)] = window, words  # the window kept alive: its id is not reused
        return words

    def _place(self, window: Window) -> tuple[str, str, str, str]:
        """``window``'s counter key, packed and as it is, its bucket and span (packed), and its
        record's fields for them."""
        key, bucket, span = self._key(window), str(window.bucket), str(window.span)
        record = f'{{"k":{_json(key)},"b":"{bucket}","n":"{span}","w":{_json(window.key)}'
        return bulk(key), key, bulk(bucket) + bulk(span), record

    def _flag_word(self, key: str) -> str:
        """Flag ``key``'s Redis key, packed (made once per flag)."""
        word = self._flag_words.get(key)
        if word is None:
            if len(self._flag_words) >= WINDOWS_KEPT:
                self._flag_words.clear()
            word = self._flag_words[key] = bulk(self._flag(key))
        return word

    def _flag(self, key: str) -> str:
        return f"{self._prefix}f:{key}"

    async def _run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        return await self._send(script, len(keys), "".join([bulk(key) for key in keys]),
                                len(args), "".join([bulk(arg) for arg in args]))

    async def _send(self, script: Script, key_count: int, keys: str, arg_count: int, args: str) -> Any:
        """Run ``script`` on keys and arguments packed already (``script_calls.bulk``), under the
        build this store is on, adopting a new one first when the script reports it."""
        for _ in _BUILDS_TRIED:
            while self._adopting is not None:  # nothing runs under a new build until restored
                await self._adopting.wait()
            mark_key, marker = self._mark_words
            self._sent += 1
            try:
                return await self._script(script, key_count + 1, arg_count + 1, keys, mark_key, args, marker)
            except FunctionsUnavailable:
                self._functions = False  # a server without functions: the scripts from now on
                continue
            except ResponseError as exc:
                moved = self._refusal(exc)
            except RedisError as exc:
                raise StorageError(f"the counter store (Redis) failed: {exc}") from exc
            finally:
                self._sent -= 1
                if not self._sent and self._answered is not None:
                    self._answered.set()
            await self._adopt(moved)
        raise StorageError("the counter store (Redis) was rebuilt again and again during one operation")

    def _script(self, script: Script, key_count: int, arg_count: int, *parts: str) -> Awaitable[Any]:
        """``script``'s call on ``key_count`` keys and ``arg_count`` arguments, given as ``parts``:
        the keys, then the arguments, in runs of ``bulk`` strings, packed once per operation or
        tuple of holds and copied once, into the command. It runs as a function of the library,
        or as a script on a server without functions (found out by the first call)."""
        loadable: Loadable
        if self._functions:
            head, loadable = script.function_head, self._library
        else:
            head, loadable = script.script_head, script
        command = f"*{3 + key_count + arg_count}\r\n{head}{count_word(key_count)}{''.join(parts)}"
        return self._calls.run_packed(loadable, command.encode())

    @staticmethod
    def _refusal(exc: ResponseError) -> str:
        """The marker a script reported the store moved to; raises for any other error."""
        message = str(exc)
        if message.startswith(_EMPTIED):
            raise StoreEmptied("the counter store (Redis) lost its counters; they are being rebuilt "
                               "from the ledger") from exc
        if not message.startswith(_MOVED):
            raise StorageError(f"the counter store (Redis) failed: {exc}") from exc
        return message.removeprefix(_MOVED).strip()

    async def _adopt(self, marker: str) -> None:
        """Move to the build ``marker``: hold this replica's in-flight reservations again (a
        rebuilt store lost them; restore skips those it kept).

        A reservation settled on the server but not yet answered would be held again for good, so
        the restore waits until every script already sent is answered, and operations of this
        store that start meanwhile wait for the restore. A build adopted already is not adopted
        twice (this replica's rebuild and a call refused under its new marker both ask)."""
        if marker == self._marker:
            return
        if self._adopting is not None:
            await self._adopting.wait()  # another operation is adopting; then retry
            return
        done = self._adopting = asyncio.Event()
        try:
            while self._sent:
                answered = self._answered = asyncio.Event()
                await answered.wait()
            for _ in range(3):
                try:
                    await self._restore(marker)
                    self._marker = marker
                    self._mark_words = self._mark_words[0], bulk(marker)
                    self._kept.forget()  # the counters may have been lost with the old build
                    self._packed.clear()  # and with them what the tuples of holds knew of them
                    return
                except ResponseError as exc:
                    marker = self._refusal(exc)  # rebuilt again meanwhile
            raise StorageError("the counter store (Redis) was rebuilt again and again while restoring")
        except RedisError as exc:
            raise StorageError(f"the counter store (Redis) failed: {exc}") from exc
        finally:
            self._answered = None
            self._adopting = None
            done.set()

    async def _restore(self, marker: str) -> None:
        held = [entry.reservation for entry in self._held.values()]
        keys, restore = self._ledgers + self._mark_words[0], self._scripts.restore
        for start in range(0, len(held), RESTORE_BATCH):
            args: list[str] = []
            for reservation in held[start:start + RESTORE_BATCH]:
                args += [reservation.id, repr(float(reservation.expires_at)), self._record(reservation)]
            packed = "".join([bulk(arg) for arg in args])
            try:
                await self._script(restore, 3, len(args) + 1, keys, packed, bulk(marker))
            except FunctionsUnavailable:
                self._functions = False
                await self._script(restore, 3, len(args) + 1, keys, packed, bulk(marker))

    async def snapshot(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot:
        """Spent and reserved per window, and which of ``flag_keys`` are set at ``now``."""
        keys = [self._key(w) for w in windows] + [self._flag(k) for k in flag_keys]
        args = [str(len(windows))]
        for window in windows:
            args += [str(window.bucket), str(window.span)]
        out = await self._run(self._scripts.snapshot, keys, args)
        usage = [(int(out[2 * i]), int(out[2 * i + 1])) for i in range(len(windows))]
        values = out[2 * len(windows):]
        flags = _set_at(flag_keys, values, now)
        self._figures.learn([window.key for window in windows], [spent + reserved for spent, reserved in usage],
                            flag_keys, flags)
        return Snapshot(usage, flags)

    def remembered(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot | None:
        """What this replica last saw of ``windows`` and ``flag_keys`` (other replicas may have
        moved them since); None when it has not seen them yet."""
        return self._figures.recall(windows, flag_keys)

    async def buckets(self, windows: Sequence[Window]) -> list[list[tuple[int, int]]]:
        """The non-empty buckets of each rolling window, oldest first, as (bucket, spent + reserved)."""
        args: list[str] = []
        for window in windows:
            args += [str(window.bucket), str(window.span)]
        out = await self._run(self._scripts.buckets, [self._key(w) for w in windows], args)
        found = []
        for flat in out:
            cells = [(int(flat[j]), int(flat[j + 1]) + int(flat[j + 2])) for j in range(3, len(flat), 3)]
            if flat[0] != "":  # the head's figures: the totals less the other buckets'
                cells.append((int(flat[0]), int(flat[1]) + int(flat[2]) - sum(used for _, used in cells)))
            found.append(sorted(cell for cell in cells if cell[1]))
        return found

    async def reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float) -> Reservation | Conflict:
        """Hold every amount at once, or none: each hold with a limit must still fit under it.

        Reserving an id that is still held changes nothing (a retried call) and returns it.
        """
        return (await self.try_reserve(reservation_id, holds, expires_at, (), 0.0)).outcome

    async def try_reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float,
                          flag_keys: Sequence[str], now: float) -> Attempt:
        """``reserve`` in one script that also reads the holds' counters and ``flag_keys``."""
        reservation = Reservation(reservation_id, tuple(holds), expires_at, self._replica)
        entry, record, score = self._pack(reservation)
        packed = entry.packed
        count = len(holds)
        keys = packed.keys
        if flag_keys:
            keys += "".join([self._flag_word(key) for key in flag_keys])
        # the deadline in ms, rounded up, is within the horizon (an integer) if and only if it is
        if expires_at * 1000 <= packed.horizon:
            keep, targets = _KEPT, None
        else:
            keep, targets = self._keep_words(packed, _ms(expires_at))
        score_word, record_word, build = bulk(score), bulk(record), self._marker
        figures, names, amounts = self._figures, packed.names, packed.amounts
        ticket = figures.expect(names, amounts)
        try:
            out = await self._send(self._scripts.reserve, 2 + count + len(flag_keys), keys, 4 + 4 * count,
                                   f"{entry.id}{score_word}{record_word}{keep}{packed.reserving}")
            if out[0] == "keep":  # a counter made anew since it was last kept: say until when
                packed.horizon = 0
                keep, targets = self._keep_words(packed, _ms(expires_at), known=False)
                out = await self._send(self._scripts.reserve, 2 + count + len(flag_keys), keys, 4 + 4 * count,
                                       f"{entry.id}{score_word}{record_word}{keep}{packed.reserving}")
        finally:
            figures.arrived(ticket)
        if out[0] == "known":  # a retried call whose first attempt held it
            self._held[reservation_id] = entry
            return Attempt(reservation, None, _NO_FLAGS)
        first = 1 if out[0] == "ok" else 2
        # per hold spent and reserved just before, and the use the counter has now: one pass (a
        # comprehension per list costs a function call and a zip each; ``strict``, a keyword
        # argument, costs as much as the zip)
        usage: list[tuple[int, int]] = []
        used: list[int] = []
        for i, amount in zip(range(first, first + 2 * count, 2), amounts):  # noqa: B905 (both count long)
            spent, reserved = int(out[i]), int(out[i + 1])
            usage.append((spent, reserved))
            used.append(spent + reserved + amount)
        flags = _set_at(flag_keys, out[first + 2 * count:], now) if flag_keys else _NO_FLAGS
        if first == 2:  # nothing held: the use is what was there
            figures.learn(names, [use - amount for use, amount in zip(used, amounts, strict=True)], flag_keys, flags)
            index = int(out[1])
            return Attempt(Conflict(index, sum(usage[index])), usage, flags)
        figures.learn(names, used, flag_keys, flags)
        if targets is not None and build == self._marker:  # kept under the build still current
            packed.horizon = self._kept.remember(packed.counters, targets)
        self._held[reservation_id] = entry
        return Attempt(reservation, usage, flags)

    def _keep_words(self, packed: _Packed, deadline: int, known: bool = True) -> tuple[str, list[int] | None]:
        """The reserve script's keep-until for ``packed`` and a reservation ending at ``deadline``
        (ms), packed, and the keep-until ms it gives per hold (None: it gives none, as the
        counters are known kept long enough, see ``kept.py``; not ``known``: not trusted)."""
        if known:
            horizon = self._kept.horizon(packed.counters, packed.untils)
            if deadline <= horizon:
                packed.horizon = horizon
                return _KEPT, None
        targets = keep_targets(packed.untils, deadline)
        return bulk(",".join([str(target) for target in targets])), targets

    def _pack(self, reservation: Reservation) -> tuple[_Held, str, str]:
        """What the scripts take of ``reservation``, packed: its settlement's words (``_Held``, with
        its holds packed), its record, and its deadline as the record writes it (the deadlines'
        score: the same number as ``repr`` writes). Only the id, the deadline and the owner are
        packed per reservation; its holds once per tuple of them."""
        holds = reservation.holds
        packed = self._packed.get(id(holds))
        if packed is None or packed.holds is not holds:
            packed = self._pack_holds(holds)
        # the record's JSON as orjson writes the whole of it
        owner = self._owner if reservation.owner == self._replica else _json(reservation.owner)
        score = _json(reservation.expires_at)
        record = f'{{"id":{_json(reservation.id)},"x":{score},"o":{owner},"h":[{packed.parts}]}}'
        return _Held(reservation, bulk(reservation.id), packed), record, score

    def _pack_holds(self, holds: tuple[Hold, ...]) -> _Packed:
        """What the scripts take of ``holds`` (see ``_Packed``), made from parts made once per
        window, and remembered by identity: admission hands the calls of one plan and size the
        same tuple, which is immutable."""
        numbers, units = self._numbers, self._units
        keys: list[str] = []
        reserving: list[str] = []
        settling: list[str] = []
        parts: list[str] = []
        names: list[str] = []
        amounts: list[int] = []
        counters: list[str] = []
        untils: list[int] = []
        for hold in holds:
            window, amount, limit = hold.window, hold.amount, hold.limit
            key, counter, place, until, until_text, head = self._words(window)
            text, word = numbers.get(amount) or _number(numbers, amount)
            held = place + word
            unit = units.get(id(hold.unit)) or _unit(units, hold.unit)
            if limit is None:
                reserving.append(f"{held}$0\r\n\r\n")
                parts.append(f'{head},"a":"{text}","t":"{until_text}","l":null,"u":"{unit}"}}')
            else:
                bound, bound_word = numbers.get(limit) or _number(numbers, limit)
                reserving.append(held + bound_word)
                parts.append(f'{head},"a":"{text}","t":"{until_text}","l":"{bound}","u":"{unit}"}}')
            keys.append(key)
            settling.append(held)
            names.append(window.key)
            amounts.append(amount)
            counters.append(counter)
            untils.append(until)
        packed = _Packed(holds, self._ledgers + "".join(keys), "".join(reserving), ",".join(parts), settling, names,
                         amounts, counters, untils, bulk(",".join([str(until) for until in untils])))
        if isinstance(holds, tuple):
            if len(self._packed) >= HOLDS_KEPT:
                self._packed.clear()
            self._packed[id(holds)] = packed
        return packed

    async def settle(self, reservation: Reservation, amounts: Sequence[int]) -> list[tuple[int, int]]:
        """Replace each hold by its actual amount; returns settled spend (before, after) per hold.

        Only the first settle (or release, or expiry) of a reservation counts; later ones
        return zeros.
        """
        return (await self.settle_claiming(reservation, amounts, (), 0.0)).moved

    async def settle_claiming(self, reservation: Reservation, amounts: Sequence[int],
                              thresholds: Sequence[Threshold], now: float) -> Settlement:
        """``settle`` and the claims of the thresholds it crossed, in one script (and in one
        coroutine: ``settle`` and ``release`` are this too)."""
        count = len(reservation.holds)
        if len(amounts) != count:
            raise ValueError(f"settle needs {count} amounts, got {len(amounts)}")
        entry = self._held.get(reservation.id)
        if entry is None or entry.reservation is not reservation:  # not held here: packed anew
            entry = self._pack(reservation)[0]
        packed, numbers = entry.packed, self._numbers
        # per hold the script's words and the change to the counter's use, in one pass
        parts: list[str] = []
        changes: list[int] = []
        for words, held, amount in zip(packed.settling, packed.amounts, amounts):  # noqa: B905 (lengths checked)
            parts.append(words + (numbers.get(amount) or _number(numbers, amount))[1])
            changes.append(amount - held)
        # the moment claims are made at, which only thresholds read (``repr``: the shortest text
        # that reads back as the same double, for Lua's ``tonumber`` as for Python)
        moment = bulk(repr(float(now))) if thresholds else _NO_MOMENT
        keys = packed.keys
        args = f"{entry.id}{count_word(count)}{moment}{packed.untils_word}{''.join(parts)}"
        if thresholds:
            claim_keys, claim_args = self._threshold_words_of(thresholds)
            keys, args = keys + claim_keys, args + claim_args
        figures, names = self._figures, packed.names
        ticket = figures.expect(names, changes)
        try:
            out = await self._send(self._scripts.settle, 2 + count + len(thresholds), keys,
                                   4 + 4 * count + 3 * len(thresholds), args)
        finally:
            figures.arrived(ticket)
        self._held.pop(reservation.id, None)
        if not out:  # not held: settled, released or expired already
            return Settlement([(0, 0)] * count, ())
        # per hold spent before and after, reserved after: each a decimal string, or an integer
        # where the script had it exactly (below 2**53); read by ``map``, which calls ``int``
        # from C, and taken three at a time
        moved: list[tuple[int, int]] = []
        used: list[int] = []
        readings = map(int, out[1:1 + 3 * count])
        for before, after, reserved in zip(readings, readings, readings):  # noqa: B905 (one iterator, in threes)
            moved.append((before, after))
            used.append(after + reserved)
        figures.learn(names, used)
        claims = out[1 + 3 * count:]
        if 1 not in claims:  # the usual answer: nothing claimed (or no thresholds)
            return Settlement(moved, ())
        return Settlement(moved, tuple(i for i, claimed in enumerate(claims) if int(claimed)))

    async def release(self, reservation: Reservation) -> None:
        """Drop the holds of a call that will not be charged."""
        await self.settle_claiming(reservation, [0] * len(reservation.holds), (), 0.0)

    def _threshold_words_of(self, thresholds: Sequence[Threshold]) -> tuple[str, str]:
        """The settle script's keys and arguments for ``thresholds``, packed: made once per tuple of
        them (admission passes the same tuple for every call of a plan)."""
        kept = self._threshold_words.get(id(thresholds))
        if kept is not None and kept[0] is thresholds:
            return kept[1], kept[2]
        keys = "".join([self._flag_word(t.key) for t in thresholds])
        args = "".join([bulk(str(t.hold + 1)) + bulk(str(t.level)) + bulk(repr(float(t.expires_at)))
                        for t in thresholds])
        if isinstance(thresholds, tuple):  # immutable: safe to know by identity while kept here
            if len(self._threshold_words) >= WINDOWS_KEPT:
                self._threshold_words.clear()
            self._threshold_words[id(thresholds)] = (thresholds, keys, args)
        return keys, args

    async def set_flags(self, flags: Sequence[tuple[str, float]]) -> None:
        """Set flags (key, expires_at epoch seconds); a flag keeps its later expiry."""
        if not flags:
            return
        args: list[str] = []
        for _, expires_at in flags:
            args += [repr(float(expires_at)), str(_ms(expires_at))]
        await self._run(self._scripts.set_flags, [self._flag(k) for k, _ in flags], args)

    async def claim(self, key: str, expires_at: float, now: float) -> bool:
        """Set ``key`` if it is not set at ``now``; True for the first caller only."""
        token = uuid.uuid4().hex
        args = [repr(float(expires_at)), repr(float(now)), str(_ms(expires_at)), token]
        return bool(await self._run(self._scripts.claim, [self._flag(key)], args))

    async def expire(self, now: float) -> list[Reservation]:
        """Settle reservations whose deadline passed at their reserved amounts; return them."""
        settled: list[Reservation] = []
        while True:
            args = [repr(float(now)), str(EXPIRE_BATCH)]
            records = await self._run(self._scripts.expire, [self._reservations, self._deadlines], args)
            settled += [_reservation(record) for record in records]
            if len(records) < EXPIRE_BATCH:
                break
        for reservation_id in [key for key, entry in self._held.items() if entry.reservation.expires_at <= now]:
            del self._held[reservation_id]  # settled by this sweep or another replica's
        return settled

    async def load(self, spend: Iterable[tuple[Window, int]]) -> None:
        """Add settled spend to the bucket each window names (the counters of a budget a reload added)."""
        batch: list[tuple[Window, int]] = []
        for entry in spend:
            batch.append(entry)
            if len(batch) == LOAD_BATCH:
                await self._load(batch)
                batch = []
        if batch:
            await self._load(batch)

    async def _load(self, batch: Sequence[tuple[Window, int]]) -> None:
        args: list[str] = []
        for window, amount in batch:
            args += [str(window.bucket), str(window.span), str(amount), str(_keep_until_ms(window))]
        await self._run(self._scripts.load, [self._key(w) for w, _ in batch], args)

    async def marker(self) -> str | None:
        """The generation marker of the counters' build; None when the store was emptied."""
        value = await self._call(self._client.get(self._mark_key))
        return None if value is None else str(value)

    async def replace(self, spend: Iterable[tuple[Window, int]], marker: str,
                      expected: Mapping[str, int] | None = None) -> int:
        """Set settled spend to exactly ``spend``, keeping reservations (see ``CounterStore``)."""
        by_key: dict[str, list[tuple[Window, int]]] = {}
        for window, amount in spend:
            by_key.setdefault(self._key(window), []).append((window, amount))
        try:
            if expected is None:
                await self._client.delete(self._mark_key)  # every replica refuses until it is done
                keys = {key async for key in self._client.scan_iter(match=f"{self._prefix}c:*", count=1000)}
                targets = {key: "" for key in keys | set(by_key)}
            else:
                targets = {f"{self._prefix}c:{key}": str(total) for key, total in expected.items()}
        except RedisError as exc:
            raise StorageError(f"the counter store (Redis) failed: {exc}") from exc
        skipped = 0
        names = sorted(targets)
        for start in range(0, len(names), LOAD_BATCH):
            args = ["" if expected is None else "1"]
            for key in names[start:start + LOAD_BATCH]:
                entries = by_key.get(key, [])
                args += [targets[key], str(len(entries))]
                for window, amount in entries:
                    args += [str(window.bucket), str(window.span), str(amount), str(_keep_until_ms(window))]
            skipped += int(await self._run(self._scripts.replace, names[start:start + LOAD_BATCH], args))
        if expected is None:
            try:
                await self._client.set(self._mark_key, marker)
            except RedisError as exc:
                raise StorageError(f"the counter store (Redis) failed: {exc}") from exc
            await self._adopt(marker)
        return skipped

    async def renew_lease(self, expires_at: float) -> None:
        """Keep this store's replica alive until ``expires_at``."""
        await self._call(self._client.zadd(self._leases, {self._replica: float(expires_at)}))

    async def end_lease(self, replica: str) -> None:
        """Forget ``replica``'s lease."""
        await self._call(self._client.zrem(self._leases, replica))

    async def expired_leases(self, now: float) -> list[str]:
        """The replicas whose lease ended before ``now``."""
        replicas = await self._call(self._client.zrangebyscore(self._leases, "-inf", f"({float(now)!r}"))
        return [str(replica) for replica in replicas]

    async def owned_by(self, replica: str) -> list[Reservation]:
        """The open reservations that ``replica`` made (a scan: run when a lease ends, not per call)."""
        found: list[Reservation] = []
        try:
            async for _, record in self._client.hscan_iter(self._reservations, count=1000):
                if orjson.loads(record).get("o") == replica:
                    found.append(_reservation(record))
        except RedisError as exc:
            raise StorageError(f"the counter store (Redis) failed: {exc}") from exc
        return found

    async def _call(self, command: Awaitable[T]) -> T:
        try:
            return await command
        except RedisError as exc:
            raise StorageError(f"the counter store (Redis) failed: {exc}") from exc

    async def ping(self) -> None:
        """Raise StorageError when the store cannot be reached."""
        try:
            await self._client.ping()
        except RedisError as exc:
            raise StorageError(f"the counter store (Redis) cannot be reached: {exc}") from exc

    async def close(self) -> None:
        await self._calls.close()
        await self._client.aclose()

    def _record(self, reservation: Reservation) -> str:
        """The reservation as stored: counter fields for the expire script (strings, so that
        amounts stay exact in Lua) and the whole hold, to hand back from ``expire``."""
        return self._pack(reservation)[1]


def _reservation(record: str) -> Reservation:
    data = orjson.loads(record)
    holds = tuple(
        Hold(
            Window(h["w"], int(h["b"]), int(h["n"]), datetime.fromisoformat(h["s"]), datetime.fromisoformat(h["e"])),
            int(h["a"]), None if h["l"] is None else int(h["l"]), h["u"],
        )
        for h in data["h"]
    )
    return Reservation(data["id"], holds, data["x"], data.get("o", ""))


def _keep_until_ms(window: Window) -> int:
    """When a counter's data stops mattering: the window's end, and for a rolling window one
    window length more (its newest bucket stays live that long). The scripts keep it until an
    open reservation's deadline when that is later."""
    until = window.end.timestamp()
    if window.span > 1:
        length = (window.end - window.start).total_seconds()
        until += length + length / window.span
    return _ms(until)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


NUMBERS_KEPT = 10_000  # amounts and limits whose text is remembered (forgotten wholesale when full)


def _number(numbers: dict[int, tuple[str, str]], value: int) -> tuple[str, str]:
    """``value`` as decimal text and packed, remembered in ``numbers``: the same amounts recur
    (a model's estimate for a size of request, a budget's limit) and ``str`` of an int costs more
    than finding it."""
    if len(numbers) >= NUMBERS_KEPT:
        numbers.clear()
    text = str(value)
    found = numbers[value] = text, f"${len(text)}\r\n{text}\r\n"
    return found


def _unit(units: dict[int, str], unit: Unit) -> str:
    """``unit``'s text, remembered by the member's id: formatting a StrEnum is a Python call, and
    so is hashing one. Only members are remembered: they live as long as their enum, so no other
    object takes their id (a record read back gives plain strings)."""
    if not isinstance(unit, Unit):
        return str(unit)
    text = units[id(unit)] = str(unit.value)
    return text


_NO_MOMENT = bulk("0")
_KEPT = bulk("")  # the reserve script's keep-until when every counter is kept long enough


def _json(value: str | float) -> str:
    return orjson.dumps(value).decode()


_NO_FLAGS: frozenset[str] = frozenset()


def _set_at(flag_keys: Sequence[str], values: Sequence[str], now: float) -> frozenset[str]:
    """Which of ``flag_keys`` are set at ``now``, from their stored ``values`` ('' when unset)."""
    if not any(values):  # the usual answer
        return _NO_FLAGS
    return frozenset(k for k, v in zip(flag_keys, values, strict=True) if v and _flag_until(v) > now)


def _flag_until(value: str) -> float:
    """The expiry stored in a flag (``<expires_at>`` or ``<expires_at>|<claim token>``)."""
    return float(value.partition("|")[0])
