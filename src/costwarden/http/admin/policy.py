"""GET /policy (the policy in force) and POST /policy/reload (swap in a new one, or keep the old)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from costwarden import errors
from costwarden.app.reload import apply_policy
from costwarden.core.audit import AuditAction, policy_entries
from costwarden.core.policy import Policy
from costwarden.http.admin.access import ADMIN, ORGANIZATION
from costwarden.http.admin.api import AdminCall, Operation
from costwarden.http.admin.audit import actor
from costwarden.http.admin.schemas import NoBody, NoQuery, PolicyOut, PolicyReloaded
from costwarden.http.bodies import read_body
from costwarden.policy import load_policy, parse_policy, summarize


async def show_policy(call: AdminCall[NoQuery, NoBody]) -> PolicyOut:
    runtime = call.runtime
    policy = runtime.policy
    return PolicyOut(
        version=runtime.policy_version, sha256=hashlib.sha256(policy.source.encode()).hexdigest(),
        source_path=runtime.settings.policy_path, timezone=policy.timezone_name,
        departments=sorted(policy.departments), upstreams=sorted(policy.upstreams), models=len(policy.catalog),
        summary=summarize(policy), yaml=policy.source,
    )


async def reload_policy(call: AdminCall[NoQuery, NoBody]) -> PolicyReloaded:
    runtime = call.runtime
    raw = await read_body(call.request, runtime.settings.max_body_bytes)
    policy = await _read_policy(raw, runtime.settings.policy_path)
    change = await apply_policy(runtime, policy)
    if change.previous is not None:
        await runtime.ledger.record_audit(policy_entries(
            change.previous, policy, runtime.admission.clock(), actor(call.who), AuditAction.POLICY_RELOADED,
            change.previous_version, change.version))
    return PolicyReloaded(version=change.version, previous_version=change.previous_version, changed=change.changed,
                          upstreams_rebuilt=change.upstreams_rebuilt, counters_loaded=change.counters_loaded,
                          summary=summarize(policy))


async def _read_policy(raw: bytes, path: str | None) -> Policy:
    """The YAML of the body, else the file the server was started with; PolicyError when invalid."""
    if raw.strip():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.InvalidRequest(f"The policy is not UTF-8 text: {exc}.") from exc
        return parse_policy(text, source="the policy in the request body")
    if path is None:
        raise errors.InvalidRequest("This server was started without --policy, so there is no file to re-read: "
                                    "send the policy YAML as the request body.")
    # A file read and YAML parse: off the event loop, so calls in flight are not held up.
    return await asyncio.to_thread(load_policy, path)


OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/policy", "Read the policy", ORGANIZATION, show_policy, NoQuery, NoBody, PolicyOut,
              description="The policy in force: its YAML text, its version in the ledger and a summary."),
    Operation("POST", "/policy/reload", "Reload the policy", (ADMIN,), reload_policy, NoQuery, NoBody,
              PolicyReloaded, raw_body="application/yaml",
              description="Re-read the file given to `serve --policy`, or take the YAML in the request body. An "
                          "invalid policy answers 400 listing every problem and the policy in force stays. A "
                          "valid one is stored as a new version and takes effect at once: the upstream pool is "
                          "rebuilt if upstreams changed, and budgets it adds start from this period's spend in "
                          "the ledger."),
]
