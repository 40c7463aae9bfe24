"""Shared test set-up: real services (Redis, PostgreSQL) come from service_fixtures; a running
gateway in front of the mock upstream from gateway_fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["service_fixtures", "gateway_fixtures"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (COSTWARDEN_REQUIRE_SERVICES=1) a skipped test is a failed test: nothing is skipped."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("COSTWARDEN_REQUIRE_SERVICES") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under COSTWARDEN_REQUIRE_SERVICES=1: {report.longrepr}"
