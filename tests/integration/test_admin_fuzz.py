"""An OpenAPI-driven fuzz run (schemathesis) over the admin API of a real gateway with traffic:
no request answers 5xx, and no operation is reachable by a role its declaration (the document's
``x-roles``) leaves out; a manager never reads another department.

Bounded: MAX_EXAMPLES generated requests per operation and role, positive and negative (values
the schema forbids), no example database (each run explores afresh)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from gateway_fixtures import Gateway, policy_text, start_gateway

ADMIN = "fuzz-admin-secret"
MANAGED = "MARKETING"
MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("fuzz"), mock_url, admin_token=ADMIN)


@pytest.fixture(scope="module")
def tokens(gw: Gateway) -> dict[str, str]:
    """An admin, a finance and a MARKETING manager token, with some traffic to read."""
    for department in ("MARKETING", "HR", "SUPPORT"):
        body = {"model": "gpt-4o-mini", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hi #mock output_tokens=20"}]}
        reply = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {gw.keys[department]}"})
        assert reply.status_code == 200, reply.text
    made = {"admin": ADMIN}
    roles: tuple[tuple[str, str | None], ...] = (("finance", None), ("manager", MANAGED))
    for role, managed in roles:
        created = httpx.post(f"{gw.url}/admin/v1/tokens", headers={"Authorization": f"Bearer {ADMIN}"},
                             json={"role": role, "department": managed, "name": f"fuzz {role}"}, timeout=30)
        assert created.status_code == 201, created.text
        made[role] = created.json()["token"]
    for token in made.values():  # servers learn new tokens within seconds
        _poll(partial(_known, gw, token))
    return made


@pytest.mark.parametrize("role", ["admin", "finance", "manager"])
def test_fuzzed_requests_never_fail_the_server_nor_cross_a_role(gw: Gateway, tokens: dict[str, str],
                                                                role: str) -> None:
    # The admin run may reload any policy the schema allows (even one without departments): each
    # role starts from the same one.
    reset = httpx.post(f"{gw.url}/admin/v1/policy/reload", content=policy_text(gw.mock_url), timeout=30,
                       headers={"Authorization": f"Bearer {ADMIN}"})
    assert reset.status_code == 200, reset.text
    schema = schemathesis.openapi.from_url(f"{gw.url}/admin/v1/openapi.json")
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 19
    for operation in operations:
        allowed = role in operation.definition.raw["x-roles"]
        for case, response in _fuzz(operation, f"{gw.url}/admin/v1", tokens[role]):
            statuses[response.status_code] += 1
            problem = _judge(case, response, role, allowed)
            if problem:
                problems.append(f"{case.method} {case.formatted_path} {case.query or ''} -> "
                                f"{response.status_code}: {problem}: {response.text[:300]}")
    assert not problems, "\n".join(sorted(set(problems))[:30])
    # The run reached the handlers, not only the front door.
    assert statuses[200] > 0 and (statuses[403] > 0) == (role != "admin"), statuses


def test_what_the_fuzz_run_found_answers_400_or_200(gw: Gateway, tokens: dict[str, str]) -> None:
    """Regressions: a period of year 1 (its bounds fall before the earliest UTC time in New York)
    was a 500 from every report; a manager of a department a reload removed got a 500 from /whoami."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for path in ("/reports/forecast", "/reports/efficiency", "/chargeback", "/customers"):
        refused = httpx.get(f"{gw.url}/admin/v1{path}", params={"period": "0001-01", "format": "focus"}
                            if path == "/chargeback" else {"period": "0001-01"}, headers=admin, timeout=30)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "period", (path, refused.text)

    before = httpx.get(f"{gw.url}/admin/v1/policy", headers=admin, timeout=30).json()["yaml"]
    policy = policy_text(gw.mock_url)  # the fuzz run may have reloaded another one
    without = policy.replace("  MARKETING:\n    name: Marketing\n", "  OTHER:\n    name: Other\n")
    assert without != policy
    assert httpx.post(f"{gw.url}/admin/v1/policy/reload", content=without, headers=admin, timeout=30).status_code == 200
    try:
        who = httpx.get(f"{gw.url}/admin/v1/whoami", headers={"Authorization": f"Bearer {tokens['manager']}"},
                        timeout=30)
        assert who.status_code == 200, who.text
        assert [d["id"] for d in who.json()["departments"]] == [MANAGED]
    finally:
        httpx.post(f"{gw.url}/admin/v1/policy/reload", content=before, headers=admin, timeout=30)


def _fuzz(operation: Any, base_url: str, token: str) -> list[tuple[Any, Any]]:
    """MAX_EXAMPLES requests to ``operation``, valid and invalid ones, with ``token``."""
    # The token is fixed: negative cases vary the parameters and bodies, not the credentials.
    auth = {"Authorization": f"Bearer {token}"}
    strategy = st.one_of(*(operation.as_strategy(mode, headers=auth) for mode in GenerationMode))
    seen: list[tuple[Any, Any]] = []

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def probe(case: Any) -> None:
        seen.append((case, case.call(base_url=base_url, headers=auth, timeout=30)))

    probe()
    return seen


def _judge(case: Any, response: Any, role: str, allowed: bool) -> str | None:
    status = response.status_code
    if status >= 500:
        return "server error"
    if not allowed:
        return None if status == 403 or _unrouted(response) else f"{role} reached an operation it may not use"
    if role != "manager" or not 200 <= status < 300:
        return None
    asked = (case.query or {}).get("department")
    if isinstance(asked, str) and asked.strip().upper() not in ("", MANAGED):
        return f"the manager of {MANAGED} read department {asked!r}"
    if "json" in " ".join(response.headers.get("content-type", [])):  # lower-case names, list values
        others = {d for d in _departments(response.json()) if d not in (None, MANAGED)}
        if others:
            return f"the manager of {MANAGED} was shown {sorted(others)}"
    return None


def _unrouted(response: Any) -> bool:
    """A 404 of the router: a path parameter it cannot match (a slash, a line break) names no
    operation at all, so no role check is reached either."""
    if response.status_code != 404:
        return False
    message = str(response.json()["error"]["message"])
    return message.startswith("No admin endpoint") or " does not exist. " in message


def _departments(data: Any) -> Iterator[Any]:
    """Every value of a ``department`` field anywhere in a JSON answer."""
    if isinstance(data, dict):
        for name, value in data.items():
            if name == "department":
                yield value
            else:
                yield from _departments(value)
    elif isinstance(data, list):
        for item in data:
            yield from _departments(item)


def _known(gw: Gateway, token: str) -> bool:
    reply = httpx.get(f"{gw.url}/admin/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return reply.status_code == 200


def _poll(check: Callable[[], bool], within_s: float = 8.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.05)

