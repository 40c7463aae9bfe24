"""costwarden policy check FILE"""

from __future__ import annotations

from typing import Annotated

import typer

from costwarden import errors
from costwarden.cli.common import console, err_console
from costwarden.policy import load_policy, summarize

app = typer.Typer(help="Validate and inspect policy files.", no_args_is_help=True)


@app.command("check")
def check(path: Annotated[str, typer.Argument(help="The policy YAML file.")]) -> None:
    """Validate a policy file: print a summary (exit 0) or every error with its line (exit 1)."""
    try:
        policy = load_policy(path)
    except errors.PolicyError as exc:
        err_console.print(exc.message, highlight=False, markup=False, soft_wrap=True)  # one line per problem
        raise typer.Exit(1) from exc
    console.print(summarize(policy), highlight=False, markup=False, soft_wrap=True)
    console.print(f"{path}: OK", style="green")
