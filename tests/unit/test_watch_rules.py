"""The watched alerts' pure parts: loop counting, anomaly detection, the policy's alerts section,
the breaker at admission, and the sentences the alerts say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from clock import FakeClock
from costwarden import errors
from costwarden.app.loops import digest
from costwarden.app.watch import Anomaly, anomalies
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.money import usd_to_nanos
from costwarden.core.notifications import Behaviour, anomaly_notification, loop_notification
from costwarden.core.repeats import Repeats
from costwarden.core.scopes import Caller, Planner
from costwarden.core.watch import AnomalyRule, breaker_key
from costwarden.counters import MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.errors import PolicyError
from costwarden.policy import parse_policy

USD = usd_to_nanos


def test_the_nth_repeat_within_the_window_is_reported_once() -> None:
    repeats = Repeats()
    hits = [repeats.seen("k1", 7, t * 0.5, 60, 5) for t in range(12)]
    assert hits == [False] * 4 + [True] + [False] * 7
    # another key, or another body, counts on its own
    assert not any(repeats.seen("k2", 7, 1.0, 60, 5) for _ in range(4))
    assert not any(repeats.seen("k1", 8, 1.0, 60, 5) for _ in range(4))


def test_a_count_starts_over_when_its_first_sighting_leaves_the_window() -> None:
    repeats = Repeats()
    # 4 repeats a minute never make 5 within 60 s
    assert not any(repeats.seen("k1", 7, t * 15.5, 60, 5) for t in range(40))
    # a run that starts again is reported again
    assert [repeats.seen("k1", 7, 1000 + t, 60, 3) for t in range(3)] == [False, False, True]


def test_repeats_stay_bounded() -> None:
    repeats = Repeats(max_entries=100)
    for body in range(1000):
        repeats.seen("k1", body, float(body), 60, 5)
        assert len(repeats) <= 100
    assert repeats.seen("k1", 999, 999.5, 60, 2)  # pruning kept the bodies still inside the window


def test_the_digest_ignores_what_varies_between_identical_asks() -> None:
    ask = {"model": "gpt-4o", "messages": [{"role": "user", "content": "again"}]}
    assert digest(ask) == digest({**ask, "user": "u1", "stream": True, "metadata": {"run": 2}})
    assert digest(ask) != digest({**ask, "messages": [{"role": "user", "content": "other"}]})
    assert digest(ask) != digest({**ask, "model": "gpt-4o-mini"})


def test_anomalies_against_the_scopes_own_average() -> None:
    rule = AnomalyRule(factor=10, window_s=900, baseline_s=7 * 86400, min_nanos=USD(5))
    # a week of $672 is $1 per 15 minutes on average
    baseline = {("ENG", "k-busy"): USD(672), ("ENG", None): USD(672)}
    recent = {
        ("ENG", "k-busy"): USD(9),  # 9 times its usual: not yet
        ("ENG", "k-new"): USD(6),  # no baseline, above the floor
        ("ENG", None): USD(15),  # the department: 15 times its usual $1
        ("HR", "k-tiny"): USD("4.99"),  # under the floor whatever its baseline
    }
    assert sorted(anomalies(rule, recent, baseline), key=str) == sorted([
        Anomaly("ENG", "k-new", USD(6), 0), Anomaly("ENG", None, USD(15), USD(1))], key=str)
    # exactly factor times the usual spend is an anomaly
    assert list(anomalies(rule, {("ENG", "k-busy"): USD(10)}, baseline)) == [
        Anomaly("ENG", "k-busy", USD(10), USD(1))]


def test_the_alerts_section_defaults_and_its_errors() -> None:
    plain = parse_policy("version: 1\ndepartments: {HR: {}}\n").alerts
    assert plain.forecast and plain.anomaly is None and plain.loop is None and not plain.breaker
    rules = parse_policy("""
version: 1
alerts:
  anomaly: {factor: 10, window: 15m, min_usd: 5, trip_breaker: true}
  loop:
departments: {HR: {}}
""").alerts
    assert rules.anomaly is not None and rules.anomaly.window_s == 900 and rules.anomaly.min_nanos == USD(5)
    assert rules.loop is not None and (rules.loop.repeats, rules.loop.window_s, rules.loop.trip_breaker) == (20, 60, False)
    assert rules.breaker
    with pytest.raises(PolicyError) as caught:
        parse_policy("""
version: 1
alerts:
  anomaly: {factor: 1, window: 15x, min_usd: -5}
  loop: {repeats: 1}
  forcast: true
departments: {HR: {}}
""")
    problems = caught.value.problems
    assert "alerts.anomaly.factor: must be a whole number >= 2: how many times the baseline rate (got 1) (line 4)" \
        in problems
    assert "alerts.anomaly.window: must be a duration like 60s, 15m, 1h or 7d (got '15x') (line 4)" in problems
    assert "alerts.anomaly.min_usd: must be >= 0 (line 4)" in problems
    assert "alerts.loop.repeats: must be between 2 and 10000 (line 5)" in problems
    assert any(p.startswith("alerts: unknown key 'forcast'") for p in problems)
    with pytest.raises(PolicyError, match="baseline: must be at least twice the window"):
        parse_policy("version: 1\nalerts: {anomaly: {window: 1d, baseline: 1d}}\ndepartments: {HR: {}}\n")


async def test_an_open_breaker_refuses_the_key_and_no_other() -> None:
    policy = parse_policy("version: 1\nalerts: {loop: {trip_breaker: true}}\ndepartments: {ENGINEERING: {}}\n")
    clock, store = FakeClock(), MemoryCounterStore()
    admission, planner = Admission(store, clock), Planner(policy)
    request = CallRequest(Caller("ENGINEERING", key_id="k1"), "gpt-4o-mini", 10, 10)
    other = CallRequest(Caller("ENGINEERING", key_id="k2"), "gpt-4o-mini", 10, 10)
    assert isinstance(await admission.admit("a", request, planner), Admitted)
    await store.set_flags([(breaker_key("ENGINEERING", "k1"), (clock.now + timedelta(minutes=15)).timestamp())])
    refused = await admission.admit("b", request, planner)
    assert isinstance(refused, Decision) and refused.denial is not None
    exc = refused.denial.exception()
    assert isinstance(exc, errors.BudgetExceeded) and exc.status == 429
    assert exc.message.startswith("Key k1 of ENGINEERING is stopped by its breaker: it sent the same request "
                                  "again and again")
    assert "refused for up to 15 min" in exc.message
    assert isinstance(await admission.admit("c", other, planner), Admitted)
    clock.advance(minutes=15)  # the breaker closes by itself
    assert isinstance(await admission.admit("d", request, planner), Admitted)


async def test_without_a_breaker_rule_no_flag_is_read() -> None:
    policy = parse_policy("version: 1\nalerts: {loop: {trip_breaker: false}}\ndepartments: {ENGINEERING: {}}\n")
    clock, store = FakeClock(), MemoryCounterStore()
    await store.set_flags([(breaker_key("ENGINEERING", "k1"), (clock.now + timedelta(minutes=15)).timestamp())])
    request = CallRequest(Caller("ENGINEERING", key_id="k1"), "gpt-4o-mini", 10, 10)
    assert isinstance(await Admission(store, clock).admit("a", request, Planner(policy)), Admitted)


def test_the_sentences_name_the_key_what_it_did_and_until_when() -> None:
    start = datetime(2026, 11, 10, 14, 0, tzinfo=UTC)
    seen = Behaviour("key:ENGINEERING/k-123", "ENGINEERING", "k-123", 60, start, start + timedelta(minutes=15),
                     datetime(2026, 11, 10, 14, 5, tzinfo=UTC))
    note = loop_notification(seen, 40, ZoneInfo("UTC"))
    assert note.text == ("Key k-123 of ENGINEERING sent the same request 40 times in 1 min; its breaker is open "
                         "(its calls are refused) until 2026-11-10 14:05 UTC. Check the client for a retry or "
                         "agent loop.")
    payload = note.payload()
    assert (payload["kind"], payload["department"], payload["scope"]) == ("loop", "ENGINEERING",
                                                                          "key:ENGINEERING/k-123")
    assert payload["budget"] == {"index": None, "period": "900s"}
    department = Behaviour("dept:ENGINEERING", "ENGINEERING", None, 900, start, start + timedelta(hours=1))
    text = anomaly_notification(department, USD("42.10"), USD("0.50"), 7 * 86400, ZoneInfo("UTC")).text
    assert text == ("ENGINEERING spent $42.10 in the last 15 min, 84 times its average of $0.50 per 15 min over "
                    "the previous 7 d. Check for a job or agent left running.")
