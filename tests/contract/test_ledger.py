"""The ledger contract, run against every backend (SQLite file, PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from costwarden.core.events import INTERRUPTED, InflightCall, Rejection, UsageEvent
from costwarden.errors import InvalidRequest, StorageError
from costwarden.ledger import AlertRecord, Ledger, hash_secret
from costwarden.ledger.engine import normalize_url
from costwarden.ledger.export import FIELDS, read_jsonl, write_export
from costwarden.ledger.migrations import STEPS, applied_versions, migrate
from costwarden.ledger.queue_items import RowRefused
from costwarden.ledger.schema import admin_tokens, api_keys

T0 = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)


def make_event(ident: str, at: datetime = T0, **fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "id": ident, "admitted_at": at, "finished_at": at + timedelta(seconds=1), "department": "HR",
        "model_requested": "gpt-4o", "model_served": "gpt-4o", "provider": "openai",
        "endpoint": "/v1/chat/completions", "input_tokens": 100, "cached_input_tokens": 20,
        "output_tokens": 50, "cost_nanos": 1_234_567, "estimate_nanos": 2_000_000,
    }
    values.update(fields)
    return UsageEvent(**values)


def make_call(ident: str, at: datetime = T0, **fields: Any) -> InflightCall:
    values: dict[str, Any] = {
        "id": ident, "admitted_at": at, "department": "HR", "model_requested": "gpt-4o",
        "model_served": "gpt-4o-mini", "provider": "openai", "endpoint": "/v1/chat/completions",
        "estimate_input_tokens": 300, "estimate_output_tokens": 700, "estimate_nanos": 4_245_000,
        "price_version": "p1", "team": "DESK", "key_id": "key_1", "user": "ana",
        "tags": {"project": "atlas"}, "decision": "clamp", "stream": True,
    }
    values.update(fields)
    return InflightCall(**values)


def make_rejection(ident: str, at: datetime = T0, **fields: Any) -> Rejection:
    values: dict[str, Any] = {
        "id": ident, "at": at, "department": "HR", "model_requested": "gpt-4o", "code": "budget_exceeded",
        "message": "Department HR has spent $200.00 of its $200.00 monthly budget.", "http_status": 429,
        "endpoint": "/v1/chat/completions", "tags": {"project": "atlas"},
    }
    values.update(fields)
    return Rejection(**values)


async def all_events(ledger: Ledger) -> list[UsageEvent]:
    return [e async for e in ledger.iter_events() if isinstance(e, UsageEvent)]


# -- writes ---------------------------------------------------------------------------------------


async def test_every_field_round_trips(ledger: Ledger) -> None:
    eastern = timezone(timedelta(hours=-5))
    event = make_event(
        "req-1", at=datetime(2026, 11, 10, 10, 0, 0, 123456, tzinfo=eastern), team="DESK", key_id="key_1",
        user="ana", tags={"project": "atlas", "feature": "search é"}, price_version="2026-11",
        decision="clamp,downgrade", status="stream_cut", http_status=200, latency_ms=812,
        overrun_tokens=3, shadow=("would_reject:HR#0",), stream=True, model_served="gpt-4o-mini",
    )
    await ledger.record(event)
    (stored,) = await all_events(ledger)
    assert stored == event
    assert stored.admitted_at.tzinfo == UTC
    assert stored.admitted_at == datetime(2026, 11, 10, 15, 0, 0, 123456, tzinfo=UTC)


async def test_an_existing_id_is_a_no_op(ledger: Ledger) -> None:
    first = make_event("dup", cost_nanos=10)
    await ledger.record(first)
    await ledger.record(replace(first, cost_nanos=99))
    await asyncio.gather(*[ledger.record(replace(first, cost_nanos=7)) for _ in range(20)])
    assert await ledger.count_events() == 1
    assert [e.cost_nanos for e in await all_events(ledger)] == [10]


async def test_concurrent_records_all_land_exactly_once(ledger: Ledger) -> None:
    events = [make_event(f"c{i}", at=T0 + timedelta(milliseconds=i), cost_nanos=i + 1) for i in range(500)]
    # Every event twice, concurrently: batching must neither lose nor double any of them.
    await asyncio.gather(*[ledger.record(e) for e in events + events])
    assert await ledger.count_events() == 500
    (total,) = await ledger.totals(None, None)
    assert total.requests == 500
    assert total.cost_nanos == sum(range(1, 501))


async def test_a_recorded_event_is_visible_to_another_connection(ledger: Ledger, ledger_url: str) -> None:
    await ledger.record(make_event("seen"))
    other = await Ledger.open(ledger_url)
    try:
        assert await other.count_events() == 1
    finally:
        await other.close()


async def test_events_survive_close_and_reopen(ledger_url: str) -> None:
    first = await Ledger.open(ledger_url)
    events = [make_event(f"d{i}", at=T0 + timedelta(seconds=i)) for i in range(50)]
    await asyncio.gather(*[first.record(e) for e in events])
    first.begin(make_call("open-call"))  # fire and forget: close must still write it
    await first.close()
    second = await Ledger.open(ledger_url)
    try:
        assert await all_events(second) == events
        assert await second.count_inflight() == 1
    finally:
        await second.close()


async def test_a_bad_row_fails_alone(ledger: Ledger) -> None:
    good = [make_event(f"g{i}") for i in range(30)]
    bad = make_event("bad", department=None)  # NOT NULL: the database refuses it
    results = await asyncio.gather(*[ledger.record(e) for e in [*good[:15], bad, *good[15:]]],
                                   return_exceptions=True)
    assert [isinstance(r, StorageError) for r in results].count(True) == 1
    assert isinstance(results[15], RowRefused)  # a refused row is not spooled: it would fail again
    assert await ledger.count_events() == 30
    assert ledger.available


async def test_a_naive_time_is_refused_before_it_is_queued(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="naive"):
        await ledger.record(make_event("naive", at=datetime(2026, 11, 10, 15, 0)))
    assert await ledger.count_events() == 0


async def test_writes_after_close_fail(ledger_url: str) -> None:
    closed = await Ledger.open(ledger_url)
    await closed.close()
    with pytest.raises(StorageError, match="closed"):
        await closed.record(make_event("late"))


async def test_rejections_are_recorded_once(ledger: Ledger) -> None:
    rejection = make_rejection("r1", shadow=("would_reject:HR#1",))
    await asyncio.gather(*[ledger.record_rejection(rejection) for _ in range(5)])
    await ledger.record_rejection(make_rejection("r2", department="SALES", tags={}))
    assert await ledger.count_rejections() == 2
    items = [r async for r in ledger.iter_events(include_rejections=True)]
    assert items[0] == rejection
    by_department = await ledger.rejection_totals(None, None, group_by=["department", "code"])
    assert [(r["department"], r["code"], r.requests) for r in by_department] == [
        ("HR", "budget_exceeded", 1), ("SALES", "budget_exceeded", 1)]


# -- write-ahead rows and crash recovery ------------------------------------------------------------


async def test_recover_interrupted_settles_calls_without_a_final_event(ledger: Ledger) -> None:
    ledger.begin(make_call("finished"))
    ledger.begin(make_call("crashed", at=T0 + timedelta(seconds=1)))
    await ledger.record(make_event("finished"))
    assert await ledger.count_inflight() == 1
    now = T0 + timedelta(seconds=31)
    (recovered,) = await ledger.recover_interrupted(now)
    assert recovered.id == "crashed"
    assert recovered.status == INTERRUPTED and recovered.interrupted
    assert (recovered.input_tokens, recovered.output_tokens) == (300, 700)
    assert recovered.cost_nanos == recovered.estimate_nanos == 4_245_000
    assert recovered.finished_at == now and recovered.latency_ms == 30_000
    assert (recovered.team, recovered.key_id, recovered.user, dict(recovered.tags)) == (
        "DESK", "key_1", "ana", {"project": "atlas"})
    assert await ledger.count_inflight() == 0
    assert {e.id: e.status for e in await all_events(ledger)} == {"finished": "ok", "crashed": INTERRUPTED}
    assert await ledger.recover_interrupted(now) == []


async def test_recovery_leaves_recent_calls_when_asked(ledger: Ledger) -> None:
    ledger.begin(make_call("old", at=T0))
    ledger.begin(make_call("young", at=T0 + timedelta(minutes=9)))
    recovered = await ledger.recover_interrupted(T0 + timedelta(minutes=10), older_than=T0 + timedelta(minutes=5))
    assert [e.id for e in recovered] == ["old"]
    assert await ledger.count_inflight() == 1


async def test_a_write_ahead_row_lives_until_its_event(ledger: Ledger) -> None:
    for i in range(100):
        ledger.begin(make_call(f"w{i}"))
    await ledger.record(make_event("w99"))  # queued after every begin(): all are written by now
    assert await ledger.count_inflight() == 99
    await asyncio.gather(*[ledger.record(make_event(f"w{i}")) for i in range(99)])
    assert await ledger.count_inflight() == 0


async def test_a_write_ahead_row_lands_without_an_event(ledger: Ledger) -> None:
    ledger.begin(make_call("alone"))  # no event follows: it must not wait for one for ever
    deadline = asyncio.get_running_loop().time() + 10
    while await ledger.count_inflight() == 0:
        assert asyncio.get_running_loop().time() < deadline, "the write-ahead row was never committed"
        await asyncio.sleep(0.01)  # polling interval, not synchronization
    await ledger.record(make_event("alone"))
    assert await ledger.count_inflight() == 0


# -- queries ----------------------------------------------------------------------------------------


async def seed_usage(ledger: Ledger) -> list[UsageEvent]:
    day2 = T0 + timedelta(days=1)
    events = [
        make_event("a", at=T0, department="HR", cost_nanos=1, input_tokens=10, tags={"project": "atlas"}),
        make_event("b", at=T0 + timedelta(seconds=59), department="HR", cost_nanos=2, model_served="gpt-4o-mini",
                   tags={"project": "zeus"}),
        make_event("c", at=T0 + timedelta(seconds=60), department="SALES", cost_nanos=4, team="EMEA"),
        make_event("d", at=day2, department="SALES", cost_nanos=8, tags={"project": "atlas"}, user="bo"),
        make_event("e", at=day2 + timedelta(hours=8, minutes=59, seconds=59, microseconds=999_999), department="ENGINEERING", cost_nanos=9_000_000_000_016,
                   output_tokens=7),
    ]
    await ledger.record_many(events)
    return events


async def test_totals_group_with_exact_sums(ledger: Ledger) -> None:
    await seed_usage(ledger)
    rows = await ledger.totals(None, None, group_by=["department"])
    assert [(r["department"], r.requests, r.cost_nanos) for r in rows] == [
        ("ENGINEERING", 1, 9_000_000_000_016), ("HR", 2, 3), ("SALES", 2, 12)]
    (org,) = await ledger.totals(None, None)
    assert org.cost_nanos == sum(r.cost_nanos for r in rows) == 9_000_000_000_031
    assert org.input_tokens == 410 and org.cached_input_tokens == 100 and org.output_tokens == 207


async def test_totals_by_day_model_and_tag(ledger: Ledger) -> None:
    await seed_usage(ledger)
    by_day = await ledger.totals(None, None, group_by=["day"])
    assert [(r["day"], r.requests) for r in by_day] == [(date(2026, 11, 10), 3), (date(2026, 11, 11), 2)]
    by_tag = await ledger.totals(None, None, group_by=["tag:project"])
    assert {r["tag:project"]: r.cost_nanos for r in by_tag} == {None: 9_000_000_000_020, "atlas": 9, "zeus": 2}
    by_model = await ledger.totals(None, None, group_by=["department", "model_served"], where={"department": "HR"})
    assert [(r["model_served"], r.cost_nanos) for r in by_model] == [("gpt-4o", 1), ("gpt-4o-mini", 2)]


async def test_totals_filter_and_window(ledger: Ledger) -> None:
    await seed_usage(ledger)
    # since is inclusive, until exclusive
    (window,) = await ledger.totals(T0 + timedelta(seconds=59), T0 + timedelta(days=1))
    assert (window.requests, window.cost_nanos) == (2, 6)
    (teamless,) = await ledger.totals(None, None, where={"team": None, "department": ["SALES", "HR"]})
    assert teamless.cost_nanos == 1 + 2 + 8
    (tagged,) = await ledger.totals(None, None, where={"tag:project": "atlas"})
    assert tagged.cost_nanos == 9
    (nothing,) = await ledger.totals(None, None, where={"department": []})
    assert (nothing.requests, nothing.cost_nanos) == (0, 0)
    with pytest.raises(ValueError, match="cannot group"):
        await ledger.totals(None, None, group_by=["secret"])


async def test_totals_by_bucket(ledger: Ledger) -> None:
    await seed_usage(ledger)
    rows = await ledger.totals(T0, T0 + timedelta(hours=1), group_by=["department"], bucket_seconds=60)
    first = int(T0.timestamp()) // 60
    assert [(r["department"], r.bucket, r.cost_nanos) for r in rows] == [
        ("HR", first, 3), ("SALES", first + 1, 4)]


async def test_iter_events_pages_through_everything_in_order(ledger: Ledger) -> None:
    events = [make_event(f"p{i:05d}", at=T0 + timedelta(seconds=i // 3)) for i in range(2_345)]
    await ledger.record_many(events[::-1])
    assert await all_events(ledger) == events
    hr_only = [e async for e in ledger.iter_events(T0, T0 + timedelta(seconds=10), department="HR")]
    assert len(hr_only) == 30
    newest = await ledger.list_events(limit=2, offset=1)
    assert [e.id for e in newest] == ["p02343", "p02342"]


# -- keys, tokens, policy, alerts, periods -----------------------------------------------------------


def table_text(url: str, table: Any) -> str:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return repr(conn.execute(select(table)).all())
    finally:
        engine.dispose()


async def test_keys_are_stored_only_as_hashes(ledger: Ledger, ledger_url: str) -> None:
    record, secret = await ledger.create_key("HR", team="DESK", user="ana", name="bot")
    assert re.fullmatch(r"cw-[A-Za-z0-9_-]{43}", secret)
    assert record.secret_hash == hash_secret(secret) and secret.startswith(record.prefix)
    assert (record.department, record.team, record.user, record.name, record.active) == ("HR", "DESK", "ana", "bot", True)
    unbound, _ = await ledger.create_key(None)
    assert (await ledger.load_keys())[hash_secret(secret)] == record
    assert secret not in table_text(ledger_url, api_keys)
    assert [k.id for k in await ledger.list_keys()] == [record.id, unbound.id]
    assert [k.id for k in await ledger.list_keys(department="HR")] == [record.id]


async def test_keys_can_be_revoked_by_id_prefix_or_secret(ledger: Ledger) -> None:
    when = T0 + timedelta(hours=1)
    by_id, _ = await ledger.create_key("HR")
    by_prefix, _ = await ledger.create_key("HR")
    by_secret, secret = await ledger.create_key("HR")
    assert (await ledger.revoke_key(by_id.id, now=when)) == replace(by_id, revoked_at=when)
    assert (await ledger.revoke_key(by_prefix.prefix, now=when)) is not None
    assert (await ledger.revoke_key(secret, now=when)) is not None
    assert await ledger.load_keys() == {}
    again = await ledger.revoke_key(by_secret.id, now=when + timedelta(days=1))
    assert again is not None and again.revoked_at == when  # the first revocation stands
    assert await ledger.revoke_key("cw-nothing") is None
    assert [k.active for k in await ledger.list_keys()] == [False, False, False]
    assert await ledger.list_keys(include_revoked=False) == []


async def test_admin_tokens_have_roles(ledger: Ledger, ledger_url: str) -> None:
    admin, admin_secret = await ledger.create_token("admin", name="ops")
    manager, _ = await ledger.create_token("manager", department="HR")
    assert re.fullmatch(r"tok-[A-Za-z0-9_-]{43}", admin_secret)
    assert (manager.role, manager.department) == ("manager", "HR")
    assert (await ledger.load_tokens())[hash_secret(admin_secret)] == admin
    assert admin_secret not in table_text(ledger_url, admin_tokens)
    with pytest.raises(InvalidRequest, match="department"):
        await ledger.create_token("manager")
    with pytest.raises(InvalidRequest, match="role"):
        await ledger.create_token("root")
    await ledger.revoke_token(admin.prefix)
    assert list((await ledger.load_tokens()).values()) == [manager]
    assert len(await ledger.list_tokens()) == 2


async def test_policy_versions_are_kept_once_per_text(ledger: Ledger) -> None:
    assert await ledger.latest_policy() is None
    first = await ledger.store_policy("version: 1\n", now=T0)
    assert await ledger.store_policy("version: 1\n", now=T0 + timedelta(hours=1)) == first
    second = await ledger.store_policy("version: 1\ntimezone: UTC\n", now=T0 + timedelta(hours=2))
    assert second > first
    assert await ledger.latest_policy() == "version: 1\ntimezone: UTC\n"
    latest = await ledger.latest_policy_version()
    assert latest is not None and latest.id == second and latest.loaded_at == T0 + timedelta(hours=2)


async def test_alerts_are_deduplicated(ledger: Ledger) -> None:
    alert = AlertRecord(at=T0, kind="threshold", department="HR", scope="department:HR", budget_index=0,
                        period_start=datetime(2026, 11, 1, tzinfo=UTC), threshold="0.8",
                        text="HR has reached 80% of its $200.00 monthly budget.", dedupe_key="HR#0@2026-11-01:0.8")
    results = await asyncio.gather(*[ledger.record_alert(alert) for _ in range(10)])
    assert results.count(True) == 1
    assert await ledger.record_alert(replace(alert, at=T0 + timedelta(hours=1))) is False
    await ledger.record_alert(replace(alert, dedupe_key="other", department="SALES", at=T0 + timedelta(minutes=1)))
    listed = await ledger.list_alerts()
    assert [a.dedupe_key for a in listed] == ["other", alert.dedupe_key]
    assert replace(listed[1], id=None) == alert
    assert [a.dedupe_key for a in await ledger.list_alerts(department="HR")] == [alert.dedupe_key]


async def test_periods_close_once(ledger: Ledger) -> None:
    assert await ledger.close_period("2026-10", now=T0) is True
    assert await ledger.close_period("2026-10", now=T0 + timedelta(days=1)) is False
    assert await ledger.closed_periods() == {"2026-10": T0}
    with pytest.raises(ValueError, match="YYYY-MM"):
        await ledger.close_period("2026-13")


# -- migrations -------------------------------------------------------------------------------------


async def test_migrations_are_idempotent(ledger_url: str) -> None:
    first, second = await asyncio.gather(Ledger.open(ledger_url), Ledger.open(ledger_url))
    await first.record(make_event("kept"))
    await first.close()
    await second.close()
    third = await Ledger.open(ledger_url)
    try:
        assert await third.count_events() == 1
    finally:
        await third.close()
    engine = create_engine(normalize_url(ledger_url))
    try:
        assert migrate(engine) == []
        assert applied_versions(engine) == [step.version for step in STEPS]
    finally:
        engine.dispose()


async def test_backend_failures_are_storage_errors() -> None:
    with pytest.raises(StorageError):
        await Ledger.open("mysql://nobody@localhost/x")
    with pytest.raises(StorageError):
        await Ledger.open("sqlite:///nonexistent-dir/deeper/ledger.db")
    with pytest.raises(StorageError):
        await Ledger.open("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")


# -- export -----------------------------------------------------------------------------------------


async def test_export_jsonl_round_trips(ledger: Ledger) -> None:
    events = await seed_usage(ledger)
    await ledger.record_rejection(make_rejection("no"))
    out = io.StringIO()
    assert await write_export(ledger, out, "jsonl") == 6
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["record"] for r in records] == ["event"] * 5 + ["rejection"]
    assert records[4]["cost_usd"] == "9000.000000016" and records[4]["cost_nanos"] == 9_000_000_000_016
    assert list(read_jsonl(lines)) == [*events, make_rejection("no")]


async def test_export_csv_by_department(ledger: Ledger) -> None:
    await seed_usage(ledger)
    await ledger.record_rejection(make_rejection("no"))
    await ledger.record_rejection(make_rejection("other", department="SALES"))
    out = io.StringIO()
    written = await write_export(ledger, out, "csv", since=T0, until=T0 + timedelta(days=3), department="HR")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert written == len(rows) == 3
    assert tuple(rows[0]) == FIELDS
    assert [(r["record"], r["id"], r["cost_usd"], r["cost_nanos"]) for r in rows] == [
        ("event", "a", "0.000000001", "1"), ("event", "b", "0.000000002", "2"), ("rejection", "no", "0", "0")]
    assert json.loads(rows[0]["tags"]) == {"project": "atlas"}
    assert rows[2]["code"] == "budget_exceeded" and rows[2]["status"] == "rejected"
