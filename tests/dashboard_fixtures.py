"""Debian's Chromium driven by Playwright (its browser downloads are not used), and the steps the
dashboard tests share: sign in, send traffic, read the admin API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from service_fixtures import missing_service

CHROMIUM = "/usr/bin/chromium"
# Headless, and quiet on a machine without outside network: no background fetches, no updates.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium under Playwright (skipped, or failed under CI, when missing)."""
    if not Path(CHROMIUM).exists():
        missing_service("chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_service("playwright (pip install playwright)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, url: str, token: str, path: str = "/dashboard/") -> None:
    """Open the dashboard and sign in with ``token`` through the form."""
    page.goto(url + path)
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def chat(url: str, key: str, model: str = "gpt-4o", *, input_tokens: int = 100_000,
         output_tokens: int = 5_000) -> httpx.Response:
    """One chat call through the gateway; the mock reports the usage asked for (a few dimes)."""
    prompt = f"Summarize the quarter. #mock input_tokens={input_tokens} output_tokens={output_tokens}"
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": output_tokens + 1000})


def admin_get(url: str, token: str, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{url}/admin/v1{path}", params=params, headers={"Authorization": f"Bearer {token}"},
                     timeout=30)


def admin_json(url: str, token: str, path: str, **params: str) -> Any:
    response = admin_get(url, token, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


def whole_percent(part: int, whole: int) -> str:
    """The dashboard's share text: whole percent, half up on tenths, "<1%" for a sliver."""
    tenths = part * 1000 // whole if whole else 0
    if part > 0 and tenths < 5:
        return "<1%"
    return f"{(tenths + 5) // 10}%"


def nanos(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000_000)


def until(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    """Poll ``check`` until it returns a true value (the page polls the API every 3 s)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")
