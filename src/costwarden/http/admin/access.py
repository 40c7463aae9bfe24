"""Who may see and change what: ``admin`` everything, ``finance`` reads everything, a ``manager``
reads its department and manages that department's keys."""

from __future__ import annotations

from costwarden import errors
from costwarden.app.auth import AdminIdentity
from costwarden.core.policy import Policy

ADMIN, FINANCE, MANAGER = "admin", "finance", "manager"
EVERYONE = (ADMIN, FINANCE, MANAGER)
ORGANIZATION = (ADMIN, FINANCE)  # whole-organization reads
KEY_KEEPERS = (ADMIN, MANAGER)


def visible_department(who: AdminIdentity, department: str | None) -> str | None:
    """The department a read is confined to: the one asked for, or a manager's own (a manager
    asking for another one is refused)."""
    if who.role != MANAGER:
        return department
    if department is not None and department != who.department:
        raise errors.PermissionDenied(
            f"This token manages department {who.department}; it may not read department {department}.")
    return who.department


def check_key_department(who: AdminIdentity, department: str | None) -> None:
    """Refuse a manager acting on a key outside its department (unbound keys included)."""
    if who.role == MANAGER and department != who.department:
        target = f"department {department}" if department else "unbound keys"
        raise errors.PermissionDenied(
            f"This token manages the keys of department {who.department}; it may not manage {target}.")


def known_department(policy: Policy, department: str) -> str:
    """``department`` if the policy in force has it, else a 400 listing the ones it has."""
    if department not in policy.departments:
        raise errors.UnknownDepartment(
            f"Unknown department {department!r}. Known departments: {', '.join(sorted(policy.departments))}.",
            param="department")
    return department
