"""JSON webhooks (Slack, Teams, anything that takes a POST): a few attempts, then give up."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from costwarden.alerts.failures import DeliveryFailed


def redact(url: str) -> str:
    """``https://hooks.slack.com/…``: webhook paths and queries are secrets; logs keep the host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


async def post_json(client: httpx.AsyncClient, url: str, body: dict[str, object], *,
                    attempts: int, backoff_s: float) -> None:
    """POST ``body`` to ``url`` until a 2xx answer; retries server errors, 408, 429 and
    network errors up to ``attempts`` times with doubling back-off. Raises DeliveryFailed."""
    problem, attempt = "not attempted", 0
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            response = await client.post(url, json=body)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if response.is_success:
                return
            problem = f"HTTP {response.status_code}"
            if not _retryable(response.status_code):
                break
        if attempt < attempts:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    raise DeliveryFailed(f"webhook {redact(url)}: {problem} (after {attempt} attempt{'s' * (attempt > 1)})")
