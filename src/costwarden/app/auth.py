"""Who is calling: virtual keys (stored only as hashes) and department attribution."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from costwarden import errors
from costwarden.core.policy import UNATTRIBUTED, Policy
from costwarden.core.scopes import Caller

log = logging.getLogger(__name__)
T = TypeVar("T")
_TAG = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """What a virtual key is bound to (department None: the call must name one)."""

    id: str
    department: str | None = None
    team: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    caller: Caller
    tags: Mapping[str, str] = field(default_factory=dict)


def key_hash(secret: str) -> str:
    """The only form in which a key is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer`` or ``x-api-key``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    """Who holds an admin API token: ``admin`` and ``finance`` see everything, a ``manager`` only
    ``department``."""

    id: str
    role: str
    department: str | None = None


class _Directory(Generic[T]):
    """Secrets by hash, re-read from the ledger so CLI changes reach servers within seconds."""

    _what = "credentials"

    def __init__(self, load: Callable[[], Awaitable[Mapping[str, T]]], refresh_s: float = 2.0) -> None:
        self._load = load
        self._refresh_s = refresh_s
        self._known: Mapping[str, T] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._known = await self._load()
        self._task = asyncio.create_task(self._refresh_forever(), name=f"{type(self).__name__}-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                self._known = await self._load()
            except errors.StorageError:
                log.warning("could not refresh %s; keeping the %d known", self._what, len(self._known), exc_info=True)

    def _lookup(self, secret: str) -> T | None:
        return self._known.get(key_hash(secret))


class KeyDirectory(_Directory[KeyIdentity]):
    """Active virtual keys by hash."""

    _what = "API keys"

    def authenticate(self, headers: Mapping[str, str]) -> KeyIdentity:
        secret = bearer(headers)
        if secret is None:
            raise errors.AuthenticationFailed(
                "No API key. Send your costwarden key as 'Authorization: Bearer cw-...' or 'x-api-key: cw-...'.")
        identity = self._lookup(secret)
        if identity is None:
            raise errors.AuthenticationFailed(
                "Invalid API key: it is unknown or was revoked. Ask your costwarden admin for a key "
                "(costwarden keys create --department ...).")
        return identity


class TokenDirectory(_Directory[AdminIdentity]):
    """Active admin API tokens by hash (the bootstrap token included, when the loader adds it)."""

    _what = "admin tokens"

    def authenticate(self, headers: Mapping[str, str]) -> AdminIdentity:
        secret = bearer(headers)
        if secret is None:
            raise errors.AuthenticationFailed(
                "No admin token. Send it as 'Authorization: Bearer tok-...' (or the bootstrap token "
                "set in COSTWARDEN_ADMIN_TOKEN).", code="invalid_admin_token")
        identity = self._lookup(secret)
        if identity is None:
            raise errors.AuthenticationFailed(
                "Invalid admin token: it is unknown or was revoked. Ask an admin for one "
                "(costwarden tokens create --role ...).", code="invalid_admin_token")
        return identity


def attribute(policy: Policy, key: KeyIdentity, headers: Mapping[str, str], body: Mapping[str, object]) -> Attribution:
    """Department, team, user and tags of a call, checked against its key and the policy."""
    named = headers.get(policy.attribution.header.lower())
    named = named.strip().upper() if named else None
    if key.department is not None:
        if named is not None and named != key.department:
            raise errors.DepartmentMismatch(
                f"This key belongs to department {key.department}, but the call names {named}. "
                f"Drop the {policy.attribution.header} header or use a key of {named}.")
        department = key.department
    elif named is not None:
        department = named
    elif policy.attribution.require:
        raise errors.DepartmentRequired(
            f"This key is not bound to a department, so every call must name one in the "
            f"{policy.attribution.header} header (one of {', '.join(sorted(policy.departments))}).")
    else:
        department = UNATTRIBUTED
    if department not in policy.departments:
        raise errors.UnknownDepartment(
            f"Unknown department {department!r}. Known departments: {', '.join(sorted(policy.departments))}.")
    team = key.team or _header(headers, "x-team-id")
    user = key.user or _header(headers, "x-user-id") or _body_user(body)
    return Attribution(Caller(department, team, key.id, user), parse_tags(headers.get("x-tags")))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip() or None if value else None


def _body_user(body: Mapping[str, object]) -> str | None:
    user = body.get("user")
    if isinstance(user, str) and user:
        return user[:128]
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        user_id = metadata.get("user_id")
        if isinstance(user_id, str) and user_id:
            return user_id[:128]
    return None


def parse_tags(header: str | None) -> dict[str, str]:
    """``project=atlas,feature=search`` -> {'project': 'atlas', 'feature': 'search'}."""
    if not header:
        return {}
    tags: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not _TAG.match(name) or not _TAG.match(value):
            raise errors.InvalidRequest(
                f"Bad X-Tags entry {part.strip()!r}: use key=value pairs separated by commas, e.g. "
                "'project=atlas,feature=search' (letters, digits and _ . : / - only).", param="X-Tags")
        tags[name] = value
    return tags
