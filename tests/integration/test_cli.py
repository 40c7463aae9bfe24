"""The costwarden command, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
from typer.testing import CliRunner

from costwarden.cli import app
from gateway_fixtures import EXAMPLE, Gateway
from servers import bound_socket

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_policy_check_summarizes_a_good_file() -> None:
    code, out = cli("policy", "check", str(EXAMPLE))
    assert code == 0
    assert "MARKETING" in out and "$1,000.00 monthly" in out and "OK" in out


def test_policy_check_lists_every_error_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndepartments:\n  HR:\n    budgets:\n      - {limit: -5, period: hourly, action: reject}\n"
                   "    tiers: [4]\n    colour: blue\n")
    code, out = cli("policy", "check", str(bad))
    assert code == 1
    assert "departments.HR.budgets[0].limit" in out and "(line 5)" in out
    assert "period" in out and "tiers" in out and "colour" in out


def test_policy_check_prints_each_error_on_one_line_whatever_its_length(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntimezone: Mars/Olympus\ndepartments:\n  HR:\n    colour: blue\n")
    code, out = cli("policy", "check", str(bad))
    assert code == 1
    lines = out.splitlines()
    assert "  timezone: unknown timezone 'Mars/Olympus': use an IANA name like America/New_York (line 2)" in lines
    colour = [line for line in lines if line.startswith("  departments.HR: unknown key 'colour'")]
    assert len(colour) == 1 and colour[0].endswith("(line 5)")


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/k.db"
    code, out = cli("keys", "create", "--department", "sales", "--name", "crm", "--json", "--db", db)
    assert code == 0
    created = json.loads(out)
    assert created["key"].startswith("cw-") and len(created["key"]) >= 35 and created["department"] == "SALES"
    code, out = cli("keys", "list", "--json", "--db", db)
    listed = [json.loads(line) for line in out.splitlines()]
    assert [k["id"] for k in listed] == [created["id"]] and created["key"] not in out
    code, out = cli("keys", "revoke", created["id"], "--db", db)
    assert code == 0
    code, out = cli("keys", "revoke", "nope", "--db", db)
    assert code == 1 and "no key matches" in out


def test_keys_create_checks_the_department_against_the_policy(tmp_path: Path) -> None:
    code, out = cli("keys", "create", "--department", "LEGAL", "--policy", str(EXAMPLE), "--db",
                    f"sqlite:///{tmp_path}/k.db")
    assert code == 1 and "unknown department 'LEGAL'" in out


def test_keys_and_tokens_refuse_a_malformed_department_without_any_policy(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/k.db"  # no server has stored a policy here: only the id's form is known
    for args in (("keys", "create", "--department", "bad id"), ("keys", "create", "--department", "HR", "--team", "a/b"),
                 ("tokens", "create", "--role", "manager", "--department", "-HR")):
        code, out = cli(*args, "--db", db)
        assert code == 1 and "bad id" in out, args
    code, out = cli("keys", "list", "--json", "--db", db)
    assert code == 0 and out == ""


def test_cli_key_changes_reach_a_running_server_within_5_seconds(gateway: Gateway) -> None:
    code, out = cli("keys", "create", "--department", "HR", "--json", "--db", gateway.db_url)
    assert code == 0
    key = json.loads(out)
    headers = {"Authorization": f"Bearer {key['key']}"}

    def status_within_5s(expected: int) -> int:
        deadline = time.monotonic() + 5
        status = 0
        while time.monotonic() < deadline:
            status = httpx.get(f"{gateway.url}/v1/models", headers=headers).status_code
            if status == expected:
                break
            time.sleep(0.1)
        return status

    assert status_within_5s(200) == 200
    cli("keys", "revoke", key["id"], "--db", gateway.db_url)
    assert status_within_5s(401) == 401


def test_ledger_export_and_import(gateway: Gateway, tmp_path: Path) -> None:
    for text in ("one", "two", "three"):
        httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gateway.keys['SALES']}"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
    httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gateway.keys['SALES']}"},
               json={"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]})
    result = runner.invoke(app, ["ledger", "export", "--format", "csv", "--db", gateway.db_url])
    assert result.exit_code == 0 and "exported 4 records" in result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["record"] for r in rows) == ["event", "event", "event", "rejection"]
    assert all("e" not in r["cost_usd"].lower() for r in rows)
    jsonl = tmp_path / "usage.jsonl"
    assert cli("ledger", "export", "--output", str(jsonl), "--db", gateway.db_url)[0] == 0
    copy = f"sqlite:///{tmp_path}/copy.db"
    code, out = cli("ledger", "import", str(jsonl), "--db", copy)
    assert code == 0 and "imported 3 new events and 1 new refused calls" in out
    code, out = cli("ledger", "import", str(jsonl), "--db", copy)  # idempotent by event id
    assert code == 0 and "imported 0 new events" in out and "3 events and 1 refused calls were already present" in out
    exported = runner.invoke(app, ["ledger", "export", "--db", copy]).stdout
    assert len(exported.splitlines()) == 4


def test_ledger_export_refuses_bad_input(tmp_path: Path) -> None:
    code, out = cli("ledger", "export", "--since", "yesterday", "--db", f"sqlite:///{tmp_path}/x.db")
    assert code == 1 and "--since" in out
    code, out = cli("ledger", "export", "--format", "xml", "--db", f"sqlite:///{tmp_path}/x.db")
    assert code == 1 and "unknown format" in out


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    ports = []
    for _ in range(2):
        sock = bound_socket()
        ports.append(sock.getsockname()[1])
        sock.close()
    done = subprocess.run([sys.executable, "-m", "costwarden", "demo", "--exit", "--calls", "60",
                           "--port", str(ports[0]), "--mock-port", str(ports[1])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "What the gateway did" in done.stdout and "MARKETING" in done.stdout
    assert "Bearer cw-" in done.stdout
    assert (tmp_path / "costwarden.db").exists()
    support = next(line for line in done.stdout.splitlines() if "SUPPORT" in line).split("│")
    assert int(support[8]) > 0, "the traffic shows a tier refusal"
    gold = re.search(r"Acme Corp \(gold\) pays (\d+)% less per call than Globex \(silver\)", done.stdout)
    assert gold is not None and int(gold.group(1)) > 0, done.stdout
    # The summary's dollars are the ledger's, streamed calls included (their cost is in the last chunk).
    total = next(line for line in done.stdout.splitlines() if "│ total" in line).split("│")[-2].strip()
    exported = subprocess.run([sys.executable, "-m", "costwarden", "ledger", "export"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60).stdout
    ledger = sum(Decimal(r["cost_usd"]) for r in map(json.loads, exported.splitlines()) if r["record"] == "event")
    assert Decimal(total) == ledger.quantize(Decimal("0.0001")), (total, ledger)


def test_every_period_command_refuses_a_year_outside_the_ledger_with_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/k.db"
    for command in (("report", "chargeback"), ("report", "journal"), ("report", "customers"), ("report", "efficiency"),
                    ("report", "forecast"), ("close",), ("simulate",)):
        code, out = cli(*command, "--period", "0001-01", "--policy", str(EXAMPLE), "--db", db)
        assert code == 1 and "bad billing period '0001-01'" in out, (command, out)


def test_a_file_that_cannot_be_read_or_written_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/k.db"
    for args, named in ((("ledger", "import", str(tmp_path)), str(tmp_path)),
                        (("ledger", "export", "-o", str(tmp_path / "no" / "x.jsonl")), str(tmp_path / "no" / "x.jsonl")),
                        (("report", "forecast", "--policy", str(EXAMPLE), "-o", str(tmp_path)), str(tmp_path))):
        done = subprocess.run([sys.executable, "-c", "from costwarden.cli import main; main()", *args, "--db", db],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (args, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and named in line, args


def test_a_port_or_worker_count_out_of_range_is_refused_before_anything_starts() -> None:
    # A bad --db as well: a command that took the bad number would end on the database's error instead.
    for args in (("serve", "--port", "99999"), ("serve", "--workers", "0"), ("serve", "--max-body-mb", "0"),
                 ("demo", "--port", "-1"), ("demo", "--mock-port", "65536"),
                 ("mock-upstream", "--port", "70000"), ("mock-upstream", "--port", "-5")):
        result = runner.invoke(app, [*args, "--db", "foo://x"] if args[0] != "mock-upstream" else list(args))
        [line] = result.output.splitlines()  # one line, as every configuration mistake
        assert result.exit_code == 1 and line.startswith(f"error: {args[1]} {args[2]}:"), (args, result.output)
