"""The ``costwarden`` command."""

from __future__ import annotations

import typer

from costwarden.cli import catalog, close, demo, keys, ledger, policy, report, serve, simulate
from costwarden.cli.common import fail

app = typer.Typer(
    name="costwarden",
    help="An LLM gateway that attributes, prices, budgets and records every call per department.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(policy.app, name="policy")
app.add_typer(catalog.app, name="catalog")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(keys.tokens_app, name="tokens")
app.add_typer(ledger.app, name="ledger")
app.add_typer(report.app, name="report")
app.command("serve")(serve.serve)
app.command("mock-upstream")(serve.mock_upstream)
app.command("demo")(demo.demo)
app.command("close")(close.close)
app.command("reopen")(close.reopen)
app.command("simulate")(simulate.simulate_command)


def main() -> None:
    try:
        app()
    except OSError as exc:  # a file named on the command line that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        raise SystemExit(fail(f"{exc.strerror or exc}{where}").exit_code) from None
