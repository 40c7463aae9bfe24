"""``costwarden serve`` with a configuration mistake ends with one clear line, never a traceback
(SPEC §10)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costwarden.cli import app
from gateway_fixtures import EXAMPLE

BAD_POLICY = "version: 1\ndepartments:\n  HR:\n    budgets: [{limit: -5, period: monthly, action: reject}]\n    colour: blue\n"


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """Exit code and standard error of ``costwarden serve`` run in-process."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("COSTWARDEN_")}
    environ = {**unset, "COSTWARDEN_DB": f"sqlite:///{tmp_path}/ledger.db", **env}
    result = CliRunner().invoke(app, ["serve", "--port", "0", *args], env=environ)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (("--policy", "BAD"), {},
     "error: BAD is invalid: departments.HR.budgets[0].limit: must be > 0 (line 4); "
     "departments.HR: unknown key 'colour'; allowed keys: budgets, cost_center, "),
    (("--policy", "MISSING"), {}, "error: MISSING is invalid: file not found: MISSING"),
    (("--policy", str(EXAMPLE), "--redis", "foo://x"), {},
     "error: --redis: unknown counter store URL 'foo://x': use memory:// or redis://host:port/db"),
    (("--policy", str(EXAMPLE)), {"COSTWARDEN_SMTP_URL": "http://mail.example.com"},
     "error: COSTWARDEN_SMTP_URL: unsupported scheme 'http'"),
    (("--policy", str(EXAMPLE)), {"COSTWARDEN_SMTP_URL": "smtp://mail.example.com:port"},
     "error: COSTWARDEN_SMTP_URL: bad port"),
    (("--policy", str(EXAMPLE), "--db", "mysql://db.example.com/costs"), {},
     "error: unsupported database 'mysql'"),
    ((), {}, "error: no --policy given, and this database has no policy stored by an earlier start"),
    (("--policy", "MOVED", "--upstream-env", "OPENAI_API_KEY"), {},
     "error: the start-up policy names variables --upstream-env does not allow: upstreams.anthropic.api_key_env"),
    (("--policy", str(EXAMPLE), "--db", "postgresql://costwarden@127.0.0.1:1/costs"), {},  # psycopg says it in two lines
     "error: ledger: opening postgresql+psycopg://costwarden@127.0.0.1:1/costs failed: OperationalError: "),
    (("--policy", str(EXAMPLE), "--port", "99999"), {}, "error: --port 99999: a port is a number from 0 to 65535"),
    (("--policy", str(EXAMPLE), "--host", "no-such-host.invalid"), {}, "error: cannot listen on no-such-host.invalid:0: "),
], ids=["bad-policy", "missing-policy", "redis-scheme", "smtp-scheme", "smtp-port", "db-scheme", "no-policy",
        "allow-list", "db-unreachable", "port-range", "host"])
def test_a_configuration_mistake_is_one_line(tmp_path: Path, args: tuple[str, ...], env: dict[str, str],
                                             message: str) -> None:
    files = {"BAD": tmp_path / "bad.yaml", "MISSING": tmp_path / "missing.yaml", "MOVED": tmp_path / "moved.yaml"}
    files["BAD"].write_text(BAD_POLICY)
    # the example's anthropic upstream, moved off the provider's own host
    files["MOVED"].write_text(EXAMPLE.read_text().replace("https://api.anthropic.com", "http://127.0.0.1:9"))
    args = tuple(str(files.get(a, a)) for a in args)
    message = message.replace("BAD", str(files["BAD"])).replace("MISSING", str(files["MISSING"]))
    code, stderr = serve(tmp_path, *args, **env)
    assert code != 0
    [line] = stderr.splitlines()
    assert line.startswith(message), line


def test_the_real_command_prints_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_POLICY)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COSTWARDEN_")}
    done = subprocess.run([sys.executable, "-m", "costwarden", "serve", "--policy", "bad.yaml", "--redis", "foo://x"],
                          cwd=tmp_path, env={**inherited, "COSTWARDEN_DB": f"sqlite:///{tmp_path}/ledger.db"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "error: --redis: unknown counter store URL 'foo://x': use memory:// or redis://host:port/db\n"


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = serve(tmp_path, "--policy", str(EXAMPLE), "--port", str(port))
    assert code == 1
    assert stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
