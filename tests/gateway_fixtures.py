"""A running gateway (real uvicorn, real SQLite ledger) in front of the real mock upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from costwarden.app.settings import Settings
from costwarden.http.app import create_app
from costwarden.ledger import Ledger
from costwarden.mock_upstream import create_app as create_mock
from costwarden.policy import parse_policy
from servers import serving

EXAMPLE = Path(__file__).parent.parent / "examples" / "policy.yaml"
T = TypeVar("T")
# The head of a test policy: upstreams (pointed at the mock by policy_text) and the departments
# every test gateway has keys for. Tests append what they exercise.
UPSTREAMS = """
version: 1
upstreams:
  openai:    {type: openai,    base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  anthropic: {type: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
"""
PLAIN_DEPARTMENTS = "  SALES: {}\n  MARKETING: {}\n  ENGINEERING: {}\n  SUPPORT: {teams: {TIER1-DESK: {}}}\n"
DEPARTMENTS = ("MARKETING", "ENGINEERING", "HR", "SALES", "SUPPORT")


def policy_text(mock_url: str, base: str | None = None) -> str:
    """The SPEC example policy (or ``base``) with its upstreams pointed at the mock."""
    text = base if base is not None else EXAMPLE.read_text()
    text = text.replace("https://api.openai.com/v1", f"{mock_url}/v1").replace("https://api.anthropic.com", mock_url)
    return text


@dataclass
class Gateway:
    url: str
    mock_url: str
    db_url: str
    keys: dict[str, str] = field(default_factory=dict)
    unbound: str = ""
    clients: list[Any] = field(default_factory=list)

    def track(self, client: T) -> T:
        """Close this SDK client when the test ends (unclosed sockets fail the suite)."""
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()

    def mock_stats(self) -> dict[str, object]:
        data: dict[str, object] = httpx.get(f"{self.mock_url}/mock/stats").json()
        return data

    def ledger_query(self, fn):  # type: ignore[no-untyped-def]
        """Run ``await fn(ledger)`` on a fresh connection to the gateway's database."""

        async def work():  # type: ignore[no-untyped-def]
            ledger = await Ledger.open(self.db_url)
            try:
                return await fn(ledger)
            finally:
                await ledger.close()

        return asyncio.run(work())


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    with serving(create_mock()) as url:
        yield url


def start_gateway(tmp: Path, mock_url: str, policy_yaml: str | None = None, *,
                  server: dict[str, Any] | None = None, **settings: object) -> Iterator[Gateway]:
    """A gateway on a fresh SQLite ledger in ``tmp`` (or ``db_url=``), with a key per department;
    ``server`` holds extra uvicorn options."""
    tmp.mkdir(parents=True, exist_ok=True)
    db_url = str(settings.pop("db_url", None) or f"sqlite:///{tmp}/ledger.db")
    keys: dict[str, str] = {}

    async def make_keys() -> str:
        ledger = await Ledger.open(db_url)
        try:
            for dept in DEPARTMENTS:
                keys[dept] = (await ledger.create_key(dept, name=f"test {dept}"))[1]
            keys["ENGINEERING-AGENT"] = (await ledger.create_key("ENGINEERING", name="agent"))[1]
            keys["SUPPORT-DESK"] = (await ledger.create_key("SUPPORT", team="TIER1-DESK"))[1]
            return (await ledger.create_key(None, name="unbound"))[1]
        finally:
            await ledger.close()

    unbound = asyncio.run(make_keys())
    policy = parse_policy(policy_text(mock_url, policy_yaml))
    env = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", **settings.pop("environ", {})}  # type: ignore[dict-item]
    config = Settings(db_url=db_url, environ=env, **settings)  # type: ignore[arg-type]
    with serving(create_app(config, policy), **(server or {})) as url:
        running = Gateway(url, mock_url, db_url, keys, unbound)
        try:
            yield running
        finally:
            running.close_clients()


@pytest.fixture
def gateway(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path, mock_url)
