"""Fixtures shared by the storage contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from costwarden.ledger import Ledger


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    """A ledger on a fresh database of each backend (``ledger_url``), closed after the test."""
    opened = await Ledger.open(ledger_url)
    try:
        yield opened
    finally:
        await opened.close()
