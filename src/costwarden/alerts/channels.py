"""Delivery of one notification to one target: ``log:``, ``http(s)://`` or ``mailto:``."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import httpx

from costwarden.alerts import mail
from costwarden.alerts.failures import DeliveryFailed
from costwarden.alerts.mail import SmtpSettings
from costwarden.alerts.webhook import post_json, redact
from costwarden.core.notifications import Notification

ALERT_LOGGER = "costwarden.alerts"
CHANNEL_KINDS = ("log", "webhook", "email")


def channel_kind(target: str) -> str:
    """``log``, ``webhook`` or ``email``; ``unknown`` for anything else."""
    if target.startswith("log:"):
        return "log"
    if target.startswith(("http://", "https://")):
        return "webhook"
    if target.startswith("mailto:"):
        return "email"
    return "unknown"


def describe(target: str) -> str:
    """``target`` fit for a log line (a webhook URL's path is a secret)."""
    return redact(target) if channel_kind(target) == "webhook" else target


class Channels:
    """The senders, sharing one HTTP connection pool. Every ``deliver`` raises DeliveryFailed
    on failure; ``aclose()`` releases the pool."""

    def __init__(self, smtp: SmtpSettings | None, *, webhook_timeout_s: float, webhook_attempts: int,
                 backoff_s: float, smtp_timeout_s: float) -> None:
        self.smtp = smtp
        self._webhook_timeout_s = webhook_timeout_s
        self._webhook_attempts = webhook_attempts
        self._backoff_s = backoff_s
        self._smtp_timeout_s = smtp_timeout_s
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, notification: Notification, target: str, at: datetime) -> None:
        """Send ``notification`` to ``target``; ``at`` dates an e-mail."""
        kind = channel_kind(target)
        if kind == "log":
            self._log(notification, target)
        elif kind == "webhook":
            await post_json(self._http(), target, notification.payload(),
                            attempts=self._webhook_attempts, backoff_s=self._backoff_s)
        elif kind == "email":
            await self._email(notification, target, at)
        else:
            raise DeliveryFailed(f"unknown notify target {target!r}: use mailto:, https://, http:// or log:")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Redirects are not followed: a webhook that moved should be fixed in the policy.
            self._client = httpx.AsyncClient(timeout=self._webhook_timeout_s, follow_redirects=False,
                                             headers={"User-Agent": "costwarden-alerts"})
        return self._client

    @staticmethod
    def _log(notification: Notification, target: str) -> None:
        name = target.removeprefix("log:") or ALERT_LOGGER
        logging.getLogger(name).warning("%s alert: %s", notification.kind, notification.text,
                                        extra={"alert": notification.payload()})

    async def _email(self, notification: Notification, target: str, at: datetime) -> None:
        if self.smtp is None:
            raise DeliveryFailed("e-mail is disabled: COSTWARDEN_SMTP_URL is not set")
        to = mail.recipients(target)
        if not to:
            raise DeliveryFailed(f"{target!r} names no address")
        message = mail.compose(notification, to, self.smtp.sender, at)
        await asyncio.to_thread(mail.send, self.smtp, message, to, self._smtp_timeout_s)
