"""Alert e-mail: SMTP settings from the environment, the message, and a blocking send.

The send uses the standard library's ``smtplib``; the dispatcher runs it in a worker thread so
that a slow mail relay never holds the event loop.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from costwarden.alerts.failures import DeliveryFailed
from costwarden.core.notifications import Notification

DEFAULT_SENDER = "costwarden@localhost"
SUBJECT_PREFIX = "[costwarden] "
_SCHEMES = {"smtp": False, "smtp+starttls": True}
# A sentence ends at . ! or ? followed by white space or the end: "$1,000.00" is not an end.
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?=\s|$)", re.DOTALL)
_SUBJECT_MAX = 200


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where alert e-mail goes. ``starttls`` upgrades the connection before logging in."""

    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SmtpSettings | None:
        """Settings from ``COSTWARDEN_SMTP_URL`` (``smtp://user:pass@host:port`` or
        ``smtp+starttls://...``) and ``COSTWARDEN_SMTP_FROM``; None (e-mail disabled) when the
        URL is not set. A malformed URL raises ValueError naming the variable."""
        url = environ.get("COSTWARDEN_SMTP_URL", "").strip()
        if not url:
            return None
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(f"COSTWARDEN_SMTP_URL: unsupported scheme {parts.scheme!r}: "
                             "use smtp://user:pass@host:port or smtp+starttls://user:pass@host:port")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"COSTWARDEN_SMTP_URL: bad port ({exc})") from None
        if not parts.hostname:
            raise ValueError("COSTWARDEN_SMTP_URL: no host, e.g. smtp://mail.example.com:25")
        starttls = _SCHEMES[scheme]
        return cls(
            host=parts.hostname,
            port=port or (587 if starttls else 25),
            sender=environ.get("COSTWARDEN_SMTP_FROM", "").strip() or DEFAULT_SENDER,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            starttls=starttls,
        )


def recipients(target: str) -> list[str]:
    """The addresses of ``mailto:a@x.com,b@y.com`` (any ``?query`` is ignored)."""
    addresses = target.removeprefix("mailto:").split("?", 1)[0]
    found = [unquote(a).strip() for a in addresses.split(",")]
    return [a for a in found if a]


def subject(text: str) -> str:
    """``[costwarden] `` and the first sentence of ``text``, on one line."""
    match = _FIRST_SENTENCE.match(text.strip())
    sentence = match.group(1) if match else text.strip()
    # Header values may not carry line breaks; a subject line reads better without its full stop.
    line = " ".join(sentence.split()).removesuffix(".")
    if len(line) > _SUBJECT_MAX:
        line = line[: _SUBJECT_MAX - 1].rstrip() + "…"
    return SUBJECT_PREFIX + line


def body(notification: Notification) -> str:
    """The sentence, then every payload field on its own line."""
    lines = [notification.text, ""]
    for name, value in notification.payload().items():
        if value is None or name == "text":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n"


def compose(notification: Notification, to: list[str], sender: str, at: datetime) -> EmailMessage:
    """The alert e-mail, marked as automatically generated (RFC 3834)."""
    message = EmailMessage()
    message["Subject"] = subject(notification.text)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(at.timestamp(), usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body(notification))
    return message


def send(settings: SmtpSettings, message: EmailMessage, to: list[str], timeout_s: float) -> None:
    """Send ``message`` (blocking); raises DeliveryFailed on any SMTP or network error."""
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=timeout_s) as client:
            if settings.starttls:
                client.starttls(context=ssl.create_default_context())
            if settings.username:
                client.login(settings.username, settings.password or "")
            refused = client.send_message(message, from_addr=settings.sender, to_addrs=to)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {exc}") from exc
    if refused:
        raise DeliveryFailed(f"SMTP {settings.host}:{settings.port} refused {', '.join(sorted(refused))}")
