"""costwarden keys create|list|revoke and costwarden tokens create|list|revoke"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import orjson
import typer
from rich.table import Table

from costwarden.app.bootstrap import policy_for
from costwarden.cli.common import DbOption, PolicyOption, audit, console, fail, ledger_at, open_ledger, run
from costwarden.core.audit import AuditAction
from costwarden.core.policy import Policy
from costwarden.ledger.credentials import KeyRecord, TokenRecord
from costwarden.policy.fields import SCOPE_ID


def _status(record: KeyRecord | TokenRecord) -> str:
    return "active" if record.revoked_at is None else f"revoked {record.revoked_at:%Y-%m-%d}"


def _listing(record: KeyRecord | TokenRecord) -> dict[str, object]:
    """A key or token as JSON-ready fields (never its secret or hash)."""
    fields = {name: getattr(record, name)
              for name in ("id", "prefix", "role", "department", "team", "user", "customer", "name")
              if hasattr(record, name)}
    return {**fields, "created_at": record.created_at.isoformat(),
            "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None}


keys_app = typer.Typer(help="Virtual API keys (cw-...), bound to a department.", no_args_is_help=True)
tokens_app = typer.Typer(help="Admin API tokens with a role (admin, finance, manager, customer).",
                         no_args_is_help=True)


@keys_app.command("create")
def create(
    department: Annotated[str | None, typer.Option(help="Bind the key to this department (else calls must send X-Department-ID).")] = None,
    team: Annotated[str | None, typer.Option(help="Bind the key to a team of the department.")] = None,
    user: Annotated[str | None, typer.Option(help="Bind the key to a user or service account.")] = None,
    customer: Annotated[str | None, typer.Option(
        help="Bind the key to a business customer of the policy (and to the customer's department).")] = None,
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Create a key and print its secret once (it is stored only as a hash)."""

    async def work() -> None:
        async with ledger_at(db) as ledger:
            dept = department.upper() if department else None
            bound_team = team.upper() if team else None
            known = await policy_for(ledger, policy)
            bound_customer = customer.upper() if customer else None
            if bound_customer is not None:
                dept = _customer_department(known, bound_customer, dept)
            _check_scope(known, dept, bound_team)
            record, secret = await ledger.create_key(dept, bound_team, user, name, customer=bound_customer)
            await audit(ledger, AuditAction.KEY_CREATED, record.id, record.department, _key_detail(record))
        if as_json:
            typer.echo(orjson.dumps({"id": record.id, "key": secret, "department": record.department,
                                     "team": record.team, "user": record.user, "customer": record.customer,
                                     "name": record.name,
                                     "prefix": record.prefix, "created_at": record.created_at.isoformat()}).decode())
            return
        owner = record.department or "any department (send X-Department-ID)"
        if record.customer:
            owner = f"customer {record.customer} of {record.department}"
        console.print(f"Created key {record.id} for {owner}.")
        console.print("Secret (shown once, store it now):")
        typer.echo(secret)

    run(work)


@keys_app.command("list")
def list_keys(
    department: Annotated[str | None, typer.Option(help="Only this department's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    db: DbOption = None,
) -> None:
    """List keys (never their secrets)."""

    async def work() -> None:
        async with ledger_at(db) as ledger:
            records = await ledger.list_keys(department.upper() if department else None)
        _print_records(records, as_json, ("id", "prefix", "department", "team", "user", "customer", "name"))

    run(work)


@keys_app.command("revoke")
def revoke(ref: Annotated[str, typer.Argument(help="Key id, display prefix or secret.")], db: DbOption = None) -> None:
    """Revoke a key; running servers refuse it within 5 seconds."""

    async def work() -> None:
        async with ledger_at(db) as ledger:
            record = await ledger.revoke_key(ref)
            if record is not None:
                await audit(ledger, AuditAction.KEY_REVOKED, record.id, record.department, _key_detail(record))
        if record is None:
            raise fail(f"no key matches {ref!r}")
        console.print(f"Revoked key {record.id} ({record.department or 'unbound'}).")

    run(work)


@tokens_app.command("create")
def create_token(
    role: Annotated[str, typer.Option(help="admin, finance, manager or customer.")],
    department: Annotated[str | None, typer.Option(help="The department a manager manages.")] = None,
    customer: Annotated[str | None, typer.Option(help="The customer a customer token reads.")] = None,
    name: Annotated[str | None, typer.Option(help="A label.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Create an admin API token and print its secret once."""

    async def work() -> None:
        ledger = await open_ledger(db)
        try:
            dept = department.upper() if department else None
            known = await policy_for(ledger, policy)
            _check_scope(known, dept, None)
            reads = customer.upper() if customer else None
            if reads is not None:
                _customer_department(known, reads, None)
            record, secret = await ledger.create_token(role, dept, name, customer=reads)
            await audit(ledger, AuditAction.TOKEN_CREATED, record.id, record.department, _token_detail(record))
        except ValueError as exc:
            raise fail(str(exc)) from exc
        finally:
            await ledger.close()
        if as_json:
            typer.echo(orjson.dumps({"id": record.id, "token": secret, "role": record.role,
                                     "department": record.department, "customer": record.customer,
                                     "name": record.name}).decode())
            return
        console.print(f"Created {record.role} token {record.id}. Secret (shown once):")
        typer.echo(secret)

    run(work)


@tokens_app.command("revoke")
def revoke_token(ref: Annotated[str, typer.Argument(help="Token id, display prefix or secret.")],
                 db: DbOption = None) -> None:
    """Revoke an admin token."""

    async def work() -> None:
        async with ledger_at(db) as ledger:
            record = await ledger.revoke_token(ref)
            if record is not None:
                await audit(ledger, AuditAction.TOKEN_REVOKED, record.id, record.department, _token_detail(record))
        if record is None:
            raise fail(f"no token matches {ref!r}")
        console.print(f"Revoked token {record.id}.")

    run(work)


@tokens_app.command("list")
def list_tokens(as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
                db: DbOption = None) -> None:
    """List admin tokens (never their secrets)."""

    async def work() -> None:
        async with ledger_at(db) as ledger:
            records = await ledger.list_tokens()
        _print_records(records, as_json, ("id", "prefix", "role", "department", "customer", "name"))

    run(work)


def _key_detail(record: KeyRecord) -> dict[str, object]:
    return {"prefix": record.prefix, "team": record.team, "user": record.user, "name": record.name,
            "customer": record.customer}


def _token_detail(record: TokenRecord) -> dict[str, object]:
    return {"prefix": record.prefix, "role": record.role, "name": record.name, "customer": record.customer}


def _customer_department(known: Policy | None, customer: str, department: str | None) -> str:
    """The department of a customer the policy declares; refuses a --department naming another."""
    if known is None:
        raise fail(f"no policy to find customer {customer!r} in: pass --policy FILE")
    found = known.customers.get(customer)
    if found is None:
        declared = ", ".join(sorted(known.customers)) or "none"
        raise fail(f"unknown customer {customer!r}; the policy declares {declared}")
    if department is not None and department != found.department:
        raise fail(f"customer {customer} belongs to department {found.department}, not {department}")
    return found.department


def _check_scope(known: Policy | None, department: str | None, team: str | None) -> None:
    """Refuse an id that is not a department or team id, and a department (or a team of it) the
    policy does not have. Without any policy (a database no server has used yet) only the ids'
    form can be checked."""
    for given in (department, team):
        if given is not None and not SCOPE_ID.fullmatch(given):
            raise fail(f"bad id {given!r}: ids match [A-Z0-9][A-Z0-9_-]{{0,63}} (e.g. MARKETING, TIER1-DESK)")
    if known is None:
        return
    if department is not None and department not in known.departments:
        raise fail(f"unknown department {department!r}; the policy has {', '.join(sorted(known.departments))}")
    if team is None:
        return
    if department is None:
        raise fail("--team needs --department: a team belongs to one department")
    teams = known.departments[department].teams
    if team not in teams:
        has = f"its teams are {', '.join(sorted(teams))}" if teams else "it has no teams"
        raise fail(f"unknown team {team!r} in department {department}; {has}")


def _print_records(records: Sequence[KeyRecord | TokenRecord], as_json: bool, columns: tuple[str, ...]) -> None:
    """JSON lines, or a table with ``columns``, creation time and status."""
    if as_json:
        for record in records:
            typer.echo(orjson.dumps(_listing(record)).decode())
        return
    table = Table(*columns, "created", "status")
    for record in records:
        table.add_row(*(str(getattr(record, c) or "-") for c in columns), f"{record.created_at:%Y-%m-%d %H:%M}",
                      _status(record))
    console.print(table)
