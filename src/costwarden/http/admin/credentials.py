"""Virtual keys (admins, and managers for their department) and admin tokens (admins; finance reads them).

A secret is in the answer to its creation only; the ledger keeps its hash. Servers pick up new
and revoked credentials within seconds (their directories re-read the ledger).
"""

from __future__ import annotations

from typing import Any

from costwarden import errors
from costwarden.core.audit import AuditAction
from costwarden.core.policy import Policy
from costwarden.http.admin import audit
from costwarden.http.admin.access import (
    ADMIN,
    EVERYONE,
    KEY_KEEPERS,
    MANAGER,
    ORGANIZATION,
    check_key_department,
    known_department,
    visible_department,
)
from costwarden.http.admin.api import AdminCall, NotFound, Operation
from costwarden.http.admin.schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    KeyQuery,
    NoBody,
    NoQuery,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
    TokenQuery,
)
from costwarden.ledger import KeyRecord, TokenRecord


async def list_keys(call: AdminCall[KeyQuery, NoBody]) -> KeyList:
    department = visible_department(call.who, call.query.department)
    records = await call.runtime.ledger.list_keys(department, call.query.include_revoked)
    return KeyList(keys=[_key(r) for r in records])


async def create_key(call: AdminCall[NoQuery, KeyCreate]) -> KeyCreated:
    body = call.body
    department = body.department
    policy = call.runtime.policy
    if body.customer is not None:  # a customer's key is bound to the customer's department
        customer = policy.customers.get(body.customer)
        if customer is None:
            raise errors.InvalidRequest(f"Unknown customer {body.customer!r}: the policy declares "
                                        f"{', '.join(sorted(policy.customers)) or 'none'}.", param="customer")
        if department is not None and department != customer.department:
            raise errors.InvalidRequest(f"Customer {customer.id} belongs to department {customer.department}, "
                                        f"not {department}.", param="department")
        department = customer.department
    if department is None and call.who.role == MANAGER:
        department = call.who.department
    check_key_department(call.who, department)
    if department is not None:
        known_department(policy, department)
    team = body.team.strip().upper() if body.team else None
    if team is not None:
        _known_team(policy, department, team)
    created, secret = await call.runtime.ledger.create_key(department, team, body.user, body.name,
                                                           customer=body.customer)
    await audit.record(call.runtime, call.who, AuditAction.KEY_CREATED, created.id, created.department,
                 _key_detail(created))
    return KeyCreated(**_key(created).model_dump(), key=secret)


async def revoke_key(call: AdminCall[NoQuery, NoBody]) -> KeyOut:
    key_id = call.path["key_id"]
    ledger = call.runtime.ledger
    record = next((k for k in await ledger.list_keys() if k.id == key_id), None)
    if record is None:
        raise NotFound(f"No key with id {key_id!r}. GET /admin/v1/keys lists them.", param="key_id")
    check_key_department(call.who, record.department)
    revoked = await ledger.revoke_key(record.id)
    assert revoked is not None
    await audit.record(call.runtime, call.who, AuditAction.KEY_REVOKED, revoked.id, revoked.department,
                 _key_detail(revoked))
    return _key(revoked)


async def list_tokens(call: AdminCall[TokenQuery, NoBody]) -> TokenList:
    records = await call.runtime.ledger.list_tokens(call.query.include_revoked)
    return TokenList(tokens=[_token(r) for r in records])


async def create_token(call: AdminCall[NoQuery, TokenCreate]) -> TokenCreated:
    body = call.body
    if body.department is not None:
        known_department(call.runtime.policy, body.department)
    if body.customer is not None and body.customer not in call.runtime.policy.customers:
        raise errors.InvalidRequest(f"Unknown customer {body.customer!r}.", param="customer")
    try:
        created, secret = await call.runtime.ledger.create_token(body.role, body.department, body.name,
                                                                 customer=body.customer)
    except ValueError as exc:  # a role without its department or customer, or with one it may not have
        raise errors.InvalidRequest(str(exc), param="role") from exc
    await audit.record(call.runtime, call.who, AuditAction.TOKEN_CREATED, created.id, created.department,
                 _token_detail(created))
    return TokenCreated(**_token(created).model_dump(), token=secret)


async def revoke_token(call: AdminCall[NoQuery, NoBody]) -> TokenOut:
    token_id = call.path["token_id"]
    ledger = call.runtime.ledger
    record = next((t for t in await ledger.list_tokens() if t.id == token_id), None)
    if record is None:
        raise NotFound(f"No admin token with id {token_id!r} (the bootstrap token lives in "
                       "COSTWARDEN_ADMIN_TOKEN and cannot be revoked here).", param="token_id")
    revoked = await ledger.revoke_token(record.id)
    assert revoked is not None
    await audit.record(call.runtime, call.who, AuditAction.TOKEN_REVOKED, revoked.id, revoked.department,
                 _token_detail(revoked))
    return _token(revoked)


def _known_team(policy: Policy, department: str | None, team: str) -> None:
    """A key's team must be one of its department's teams in the policy in force (calls with a
    key bound to an unknown team would all be refused)."""
    if department is None:
        raise errors.InvalidRequest("A key bound to a team needs a department: a team belongs to one department.",
                                    param="team")
    teams = policy.departments[department].teams
    if team not in teams:
        has = f"its teams are {', '.join(sorted(teams))}" if teams else "it has no teams"
        raise errors.InvalidRequest(f"Unknown team {team!r} in department {department}: {has}.",
                                    code="unknown_team", param="team")


def _key_detail(r: KeyRecord) -> dict[str, object]:
    return {"prefix": r.prefix, "team": r.team, "user": r.user, "name": r.name}


def _token_detail(r: TokenRecord) -> dict[str, object]:
    return {"prefix": r.prefix, "role": r.role, "name": r.name}


def _key(r: KeyRecord) -> KeyOut:
    return KeyOut(id=r.id, prefix=r.prefix, department=r.department, team=r.team, user=r.user, name=r.name,
                  customer=r.customer, created_at=r.created_at, revoked_at=r.revoked_at, active=r.active)


def _token(r: TokenRecord) -> TokenOut:
    return TokenOut(id=r.id, prefix=r.prefix, role=r.role, department=r.department, name=r.name,
                    customer=r.customer, created_at=r.created_at, revoked_at=r.revoked_at, active=r.active)


OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/keys", "List keys", EVERYONE, list_keys, KeyQuery, NoBody, KeyList,
              description="Virtual keys, never their secrets. A manager sees its department's keys only."),
    Operation("POST", "/keys", "Create a key", KEY_KEEPERS, create_key, NoQuery, KeyCreate, KeyCreated, 201,
              description="A new virtual key; the answer holds its secret, shown this once. A manager creates "
                          "keys of its own department only (the default); only an admin creates unbound keys."),
    Operation("DELETE", "/keys/{key_id}", "Revoke a key", KEY_KEEPERS, revoke_key, NoQuery, NoBody, KeyOut,
              description="Calls with the key are refused within seconds on every server. Revoking twice keeps "
                          "the first revocation time."),
    Operation("GET", "/tokens", "List admin tokens", ORGANIZATION, list_tokens, TokenQuery, NoBody, TokenList,
              description="Admin API tokens, never their secrets. Finance reads them too (it reads everything)."),
    Operation("POST", "/tokens", "Create an admin token", (ADMIN,), create_token, NoQuery, TokenCreate,
              TokenCreated, 201, description="A new admin API token with a role; the answer holds its secret, "
                                             "shown this once. A manager token names its department."),
    Operation("DELETE", "/tokens/{token_id}", "Revoke an admin token", (ADMIN,), revoke_token, NoQuery, NoBody,
              TokenOut),
]
