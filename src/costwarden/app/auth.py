"""Who is calling: virtual keys (stored only as hashes) and department attribution."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Generic, TypeVar

from costwarden import errors
from costwarden.core.policy import TAG_TEXT, UNATTRIBUTED, Department, Policy, TeamAttribution
from costwarden.core.scopes import Caller
from costwarden.ledger.credentials import hash_secret

log = logging.getLogger(__name__)
T = TypeVar("T")
# Attribution bounds (SPEC section 10): what one call may add to the ledger and to the counters.
MAX_ID_CHARS = 128  # X-User-ID, X-Team-ID, the department header, the body's user id
MAX_TAGS = 32
MAX_TAG_CHARS = 64  # each tag's name and each value
_MAX_TAGS_HEADER = MAX_TAGS * (2 * MAX_TAG_CHARS + 8)  # room for MAX_TAGS valid tags, '=', commas and spaces
HASHES_KEPT = 1024  # secrets whose hashes a directory remembers


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """What a virtual key is bound to (department None: the call must name one). A key of a
    business customer (SPEC §12) is bound to the customer and to the customer's department."""

    id: str
    department: str | None = None
    team: str | None = None
    user: str | None = None
    customer: str | None = None


# Not frozen: every call makes one, and a frozen dataclass sets each field through
# object.__setattr__ (see core/events.py). Never changed once made; nothing hashes one (its tags are a dict).
@dataclass(slots=True)
class Attribution:
    """Who a call is attributed to, and its tags (those of ``caller.tags``, as a dict)."""

    caller: Caller
    tags: Mapping[str, str] = field(default_factory=dict)


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
    ``department``, a ``customer`` only its own ``customer``'s usage and invoice."""

    id: str
    role: str
    department: str | None = None
    customer: str | None = None


class _Directory(Generic[T]):
    """Secrets by hash, re-read from the ledger so CLI changes reach servers within seconds."""

    _what = "credentials"

    def __init__(self, load: Callable[[], Awaitable[Mapping[str, T]]], refresh_s: float = 2.0) -> None:
        self._load = load
        self._refresh_s = refresh_s
        self._known: Mapping[str, T] = {}
        self._task: asyncio.Task[None] | None = None
        # The hash of each secret seen lately: a key calling again is not hashed again. Only the
        # hash is remembered per secret, and it is looked up in the known set at every call, so a
        # revoked key is refused as soon as the set is re-read; bounded, a flood of wrong keys evicts.
        self._hash = lru_cache(maxsize=HASHES_KEPT)(hash_secret)

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
            except errors.StorageError as exc:  # the ledger is down: one line each time, not a traceback
                log.warning("could not refresh %s (%s); keeping the %d known", self._what, exc, len(self._known))

    def _lookup(self, secret: str) -> T | None:
        return self._known.get(self._hash(secret))


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
    """Department, team, user and tags of a call, checked against its key and the policy.

    Every value is bounded and checked before anything is stored or counted under it, so that
    hostile input can neither grow memory and the ledger nor skip a team's budgets.
    """
    if key.customer is not None:
        key = _customer_key(policy, key)
    department = _department(policy, key, headers)
    team = _team(policy, policy.departments[department], key, headers)
    user = key.user or _bounded(_header(headers, "x-user-id"), "X-User-ID") or _body_user(body)
    tags = parse_tags(headers.get("x-tags"))
    return Attribution(Caller(department, team, key.id, user, key.customer, tuple(tags.items())), tags)


def _customer_key(policy: Policy, key: KeyIdentity) -> KeyIdentity:
    """A customer's key, bound to the department the policy in force gives the customer: its
    calls are charged there at cost, whichever department the key was issued under."""
    customer = policy.customers.get(key.customer or "")
    if customer is None:
        known = ", ".join(sorted(policy.customers)) or "none"
        raise errors.InvalidRequest(
            f"This key is bound to customer {key.customer!r}, which the policy in force does not declare "
            f"(customers: {known}). Ask your costwarden admin for a key of an existing customer.",
            code="unknown_customer")
    if customer.department == key.department:
        return key
    return KeyIdentity(key.id, customer.department, None, key.user, customer.id)


def _department(policy: Policy, key: KeyIdentity, headers: Mapping[str, str]) -> str:
    header = policy.attribution.header
    named = _bounded(_header(headers, header.lower()), header)
    named = named.upper() if named else None
    if key.department is not None:
        if named is not None and named != key.department:
            raise errors.DepartmentMismatch(
                f"This key belongs to department {key.department}, but the call names {named}. "
                f"Drop the {header} header or use a key of {named}.")
        department = key.department
    elif named is not None:
        department = named
    elif policy.attribution.require:
        raise errors.DepartmentRequired(
            f"This key is not bound to a department, so every call must name one in the "
            f"{header} header (one of {', '.join(sorted(policy.departments))}).")
    else:
        department = UNATTRIBUTED
    if department not in policy.departments:
        raise errors.UnknownDepartment(
            f"Unknown department {department!r}. Known departments: {', '.join(sorted(policy.departments))}.")
    return department


def _team(policy: Policy, dept: Department, key: KeyIdentity, headers: Mapping[str, str]) -> str | None:
    """The call's team: the key's, else X-Team-ID; it must be a team of the department."""
    named = _bounded(_header(headers, "x-team-id"), "X-Team-ID")
    team = key.team or (named.upper() if named else None)
    if team is None:
        with_rules = dept.teams_with_rules if policy.attribution.team == TeamAttribution.REQUIRED else ()
        if with_rules:
            raise errors.InvalidRequest(
                f"Department {dept.id} has team budgets, so every call must name its team in the X-Team-ID "
                f"header (one of {', '.join(with_rules)}), or use a key bound to a team.",
                code="team_required", param="X-Team-ID")
        return None
    if team not in dept.teams:
        known = f"its teams are {', '.join(sorted(dept.teams))}" if dept.teams else "it has no teams"
        if key.team is not None:
            message = (f"This key is bound to team {team!r}, which department {dept.id} does not have in the "
                       f"policy in force ({known}). Ask your costwarden admin for a key of an existing team.")
        else:
            message = (f"Unknown team {team!r} in department {dept.id}: {known}. Send one of them in "
                       "X-Team-ID, or drop the header.")
        raise errors.InvalidRequest(message, code="unknown_team", param="X-Team-ID")
    return team


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip() or None if value else None


def _bounded(value: str | None, name: str) -> str | None:
    """``value`` unless it is longer than MAX_ID_CHARS (then a 400 naming ``name``)."""
    if value is not None and len(value) > MAX_ID_CHARS:
        raise errors.InvalidRequest(
            f"{name} is {len(value):,} characters long; the limit is {MAX_ID_CHARS}. Send a short, stable "
            "id (a user name, an employee number, or a hash of a longer one).", param=name)
    return value


def _body_user(body: Mapping[str, object]) -> str | None:
    """OpenAI's ``user`` field, or Anthropic's ``metadata.user_id``."""
    user = body.get("user")
    if isinstance(user, str) and user:
        return _bounded(user, "user")
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        user_id = metadata.get("user_id")
        if isinstance(user_id, str) and user_id:
            return _bounded(user_id, "metadata.user_id")
    return None


def parse_tags(header: str | None) -> dict[str, str]:
    """``project=atlas,feature=search`` -> {'project': 'atlas', 'feature': 'search'}."""
    if not header:
        return {}
    if len(header) > _MAX_TAGS_HEADER:
        raise errors.InvalidRequest(
            f"X-Tags is {len(header):,} characters long; at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} "
            "characters each are accepted, e.g. 'project=atlas,feature=search'.", param="X-Tags")
    parts = header.split(",")
    if len(parts) > MAX_TAGS:
        raise errors.InvalidRequest(
            f"X-Tags has {len(parts)} entries; at most {MAX_TAGS} are accepted. Keep the tags you report on.",
            param="X-Tags")
    tags: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.strip().partition("=")
        if not sep or not TAG_TEXT.match(name) or not TAG_TEXT.match(value):
            shown = part.strip() if len(part) <= 2 * MAX_TAG_CHARS + 1 else part.strip()[:MAX_TAG_CHARS] + "..."
            raise errors.InvalidRequest(
                f"Bad X-Tags entry {shown!r}: use key=value pairs separated by commas, e.g. "
                f"'project=atlas,feature=search' (letters, digits and _ . : / - only, at most {MAX_TAG_CHARS} "
                "characters each).", param="X-Tags")
        if tags.setdefault(name, value) != value:
            # one value per tag: taking either silently would let a call leave its project's budget
            raise errors.InvalidRequest(
                f"X-Tags names the tag {name!r} twice, as {tags[name]!r} and {value!r}; a call carries one value "
                "per tag.", param="X-Tags")
    return tags
