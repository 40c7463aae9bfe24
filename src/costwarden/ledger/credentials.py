"""Virtual API keys (``cw-...``) and admin tokens (``tok-...``): stored only as SHA-256 hashes.

The secret is returned once, at creation; the tables keep its hash (to authenticate) and a short
prefix (to recognise a key in a list or a log). Functions here take a connection; the Ledger runs
writes on its writer thread and reads on its reader pool.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.schema import Table

from costwarden.errors import InvalidRequest
from costwarden.ledger.schema import admin_tokens, api_keys

KEY_PREFIX = "cw-"
TOKEN_PREFIX = "tok-"
ROLES = ("admin", "finance", "manager", "customer")
_DISPLAY_CHARS = 8  # random characters kept, after the prefix, to recognise a secret


def hash_secret(secret: str) -> str:
    """The stored form of a key or token: lowercase hex SHA-256 of its UTF-8 text."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(prefix: str) -> str:
    """``prefix`` followed by 43 url-safe random characters (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual API key, without its secret. ``department`` None: an unbound key. A key of a
    business customer names the customer and its department."""

    id: str
    secret_hash: str
    prefix: str
    department: str | None
    team: str | None
    user: str | None
    name: str | None
    created_at: datetime
    revoked_at: datetime | None = None
    customer: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An admin API token, without its secret. ``department`` is the one a manager manages,
    ``customer`` the one a customer token reads."""

    id: str
    secret_hash: str
    prefix: str
    role: str
    department: str | None
    name: str | None
    created_at: datetime
    revoked_at: datetime | None = None
    customer: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _key(row: RowMapping) -> KeyRecord:
    return KeyRecord(
        id=row["id"], secret_hash=row["hash"], prefix=row["prefix"], department=row["department"],
        team=row["team"], user=row["user"], name=row["name"], created_at=row["created_at"],
        revoked_at=row["revoked_at"], customer=row.get("customer"),
    )


def _token(row: RowMapping) -> TokenRecord:
    return TokenRecord(
        id=row["id"], secret_hash=row["hash"], prefix=row["prefix"], role=row["role"],
        department=row["department"], name=row["name"], created_at=row["created_at"],
        revoked_at=row["revoked_at"], customer=row.get("customer"),
    )


def insert_key(conn: Connection, secret: str, department: str | None, team: str | None,
               user: str | None, name: str | None, now: datetime, customer: str | None = None) -> KeyRecord:
    """Store a new key for ``secret``; a customer's key is bound to the customer's department too."""
    if customer is not None and not department:
        raise InvalidRequest("a customer's key needs the customer's department", param="department")
    values = {
        "id": "key_" + secrets.token_hex(8), "hash": hash_secret(secret),
        "prefix": secret[: len(KEY_PREFIX) + _DISPLAY_CHARS], "department": department,
        "team": team, "user": user, "name": name, "created_at": now, "revoked_at": None,
        "customer": customer,
    }
    conn.execute(api_keys.insert(), values)
    return _key(_one(conn, api_keys, values["id"]))


def insert_token(conn: Connection, secret: str, role: str, department: str | None,
                 name: str | None, now: datetime, customer: str | None = None) -> TokenRecord:
    """Store a new admin token for ``secret``; a manager names its department, a customer token
    its customer."""
    check_role(role, department, customer)
    values = {
        "id": "tok_" + secrets.token_hex(8), "hash": hash_secret(secret),
        "prefix": secret[: len(TOKEN_PREFIX) + _DISPLAY_CHARS], "role": role,
        "department": department, "name": name, "created_at": now, "revoked_at": None,
        "customer": customer,
    }
    conn.execute(admin_tokens.insert(), values)
    return _token(_one(conn, admin_tokens, values["id"]))


def check_role(role: str, department: str | None, customer: str | None = None) -> None:
    """Refuse an unknown role, a manager without a department, a customer token without its
    customer, or a department or customer on a role that takes none."""
    if role not in ROLES:
        raise InvalidRequest(f"unknown role {role!r}: use one of {', '.join(ROLES)}", param="role")
    if role == "manager" and not department:
        raise InvalidRequest("a manager token needs the department it manages", param="department")
    if role == "customer" and not customer:
        raise InvalidRequest("a customer token needs the customer it reads", param="customer")
    if role != "manager" and department:
        raise InvalidRequest(f"role {role} names no department: only a manager token does", param="department")
    if role != "customer" and customer:
        raise InvalidRequest(f"role {role} names no customer: only a customer token does", param="customer")


def list_keys(conn: Connection, department: str | None, include_revoked: bool) -> list[KeyRecord]:
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if department is not None:
        query = query.where(api_keys.c.department == department)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    return [_key(row) for row in conn.execute(query).mappings()]


def list_tokens(conn: Connection, include_revoked: bool) -> list[TokenRecord]:
    query = select(admin_tokens).order_by(admin_tokens.c.created_at, admin_tokens.c.id)
    if not include_revoked:
        query = query.where(admin_tokens.c.revoked_at.is_(None))
    return [_token(row) for row in conn.execute(query).mappings()]


def revoke_key(conn: Connection, ref: str, now: datetime) -> KeyRecord | None:
    """Revoke the key named by id, display prefix or full secret; None if none matches."""
    row = _revoke(conn, api_keys, ref, now)
    return None if row is None else _key(row)


def revoke_token(conn: Connection, ref: str, now: datetime) -> TokenRecord | None:
    """Revoke the token named by id, display prefix or full secret; None if none matches."""
    row = _revoke(conn, admin_tokens, ref, now)
    return None if row is None else _token(row)


def _revoke(conn: Connection, table: Table, ref: str, now: datetime) -> RowMapping | None:
    matches = conn.execute(
        select(table.c.id).where(or_(table.c.id == ref, table.c.prefix == ref, table.c.hash == hash_secret(ref)))
    ).scalars().all()
    if not matches:
        return None
    if len(matches) > 1:
        raise InvalidRequest(f"{ref!r} matches {len(matches)} credentials: give the id instead")
    # Revoking twice keeps the first revocation time.
    conn.execute(update(table).where(table.c.id == matches[0], table.c.revoked_at.is_(None)).values(revoked_at=now))
    return _one(conn, table, matches[0])


def _one(conn: Connection, table: Table, ident: Any) -> RowMapping:
    return conn.execute(select(table).where(table.c.id == ident)).mappings().one()
