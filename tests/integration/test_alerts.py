"""Alert delivery against real receivers on loopback: an SMTP server (aiosmtpd), a webhook
receiver (aiohttp) and a real SQLite ledger for de-duplication."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from costwarden.alerts import AlertDispatcher, SmtpSettings
from costwarden.core.money import usd_to_nanos
from costwarden.core.notifications import Notification
from costwarden.errors import StorageError
from costwarden.ledger import AlertRecord, Ledger

WAIT_S = 10.0
T = TypeVar("T")

TEXT = "MARKETING has reached 80% of its $1,000.00 monthly budget ($812.40 spent); it resets 2026-12-01."
PERIOD_START = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # midnight in America/New_York
PERIOD_END = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)


def notification(threshold: str = "0.8", text: str = TEXT) -> Notification:
    return Notification("threshold", "MARKETING", "dept:MARKETING", 0, "monthly", Decimal(threshold),
                        usd_to_nanos("812.40"), usd_to_nanos(1000), "usd", PERIOD_START, PERIOD_END, text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Inbox(Generic[T]):
    """Things that arrived, and a way to wait (with a timeout) until enough have."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._arrived.set()

    def add_threadsafe(self, item: T) -> None:
        self._loop.call_soon_threadsafe(self.add, item)

    async def wait_for(self, count: int) -> list[T]:
        async with asyncio.timeout(WAIT_S):
            while len(self.items) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.items)


# -- webhook receiver ---------------------------------------------------------------------


class Webhooks:
    """``/hook`` answers 200; ``/flaky`` 503 once, then 200; ``/gone`` 404; ``/hang`` never
    answers until ``release`` is set, then 500."""

    def __init__(self) -> None:
        self.bodies: Inbox[dict[str, Any]] = Inbox()
        self.calls: Inbox[str] = Inbox()
        self.release = asyncio.Event()
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.calls.add(path)
        if path == "/hang":
            await self.release.wait()
            return web.Response(status=500)
        if path == "/gone":
            return web.Response(status=404)
        if path == "/flaky" and self.calls.items.count("/flaky") == 1:
            return web.Response(status=503)
        self.bodies.add(await request.json())
        return web.Response(text="ok")

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
async def webhooks() -> AsyncIterator[Webhooks]:
    receiver = Webhooks()
    app = web.Application()
    app.router.add_post("/{name}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield receiver
    finally:
        receiver.release.set()
        await runner.cleanup()


# -- SMTP receiver ------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool
    login: tuple[str, str] | None


class MailHandler:
    def __init__(self, inbox: Inbox[Mail]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # Lines travel as CRLF; compare them as Python text.
        content = envelope.content.replace(b"\r\n", b"\n") if isinstance(envelope.content, bytes) else b""
        message = message_from_bytes(content, policy=email_policy.default)
        assert isinstance(message, EmailMessage)
        self.inbox.add_threadsafe(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message,
                                       session.ssl is not None, session.auth_data))
        return "250 Message accepted for delivery"


def accept_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    assert isinstance(data, LoginPassword)
    return AuthResult(success=True, auth_data=(data.login.decode(), data.password.decode()))


@asynccontextmanager
async def smtp_server(**server_kwargs: Any) -> AsyncIterator[tuple[int, Inbox[Mail]]]:
    inbox: Inbox[Mail] = Inbox()
    port = free_port()
    controller = Controller(MailHandler(inbox), hostname="127.0.0.1", port=port, **server_kwargs)
    await asyncio.to_thread(controller.start)
    try:
        yield port, inbox
    finally:
        await asyncio.to_thread(controller.stop)


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[SmtpSettings, Inbox[Mail]]]:
    async with smtp_server() as (port, inbox):
        yield SmtpSettings("127.0.0.1", port, sender="alerts@example.com"), inbox


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own authority, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# -- ledger and dispatcher ------------------------------------------------------------------


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(f"sqlite:///{tmp_path}/x.db")
    try:
        yield opened
    finally:
        await opened.close()


@asynccontextmanager
async def dispatching(dispatcher: AlertDispatcher, start: bool = True) -> AsyncIterator[AlertDispatcher]:
    if start:
        await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(timeout_s=0)


async def drained(dispatcher: AlertDispatcher) -> None:
    async with asyncio.timeout(WAIT_S):
        await dispatcher.drain()


EXPECTED_PAYLOAD = {
    "kind": "threshold",
    "department": "MARKETING",
    "scope": "dept:MARKETING",
    "budget": {"index": 0, "period": "monthly"},
    "threshold": 0.8,
    "spent_usd": "812.4",
    "limit_usd": "1000",
    "spent_tokens": None,
    "limit_tokens": None,
    "period_start": "2026-11-01T04:00:00+00:00",
    "period_end": "2026-12-01T05:00:00+00:00",
    "text": TEXT,
}


# -- tests ----------------------------------------------------------------------------------


async def test_webhook_gets_the_payload_and_the_ledger_records_the_alert(
        webhooks: Webhooks, ledger: Ledger) -> None:
    async with dispatching(AlertDispatcher(ledger)) as alerts:
        alerts.submit(notification(), (webhooks.url("/hook"),))
        [body] = await webhooks.bodies.wait_for(1)
        await drained(alerts)
    assert body == EXPECTED_PAYLOAD
    assert alerts.counters.delivered["webhook"] == 1
    assert not alerts.counters.failed
    [record] = await ledger.list_alerts()
    assert (record.kind, record.department, record.scope, record.budget_index) == (
        "threshold", "MARKETING", "dept:MARKETING", 0)
    assert (record.threshold, record.text, record.period_start) == ("0.8", TEXT, PERIOD_START)
    assert record.dedupe_key == notification().dedupe_key


async def test_email_arrives_with_the_text(smtp: tuple[SmtpSettings, Inbox[Mail]], ledger: Ledger) -> None:
    settings, inbox = smtp
    async with dispatching(AlertDispatcher(ledger, settings)) as alerts:
        alerts.submit(notification(), ("mailto:cmo@example.com,cfo@example.com",))
        [mail] = await inbox.wait_for(1)
        await drained(alerts)
    assert mail.sender == "alerts@example.com"
    assert mail.recipients == ["cmo@example.com", "cfo@example.com"]
    message = mail.message
    assert message["Subject"] == ("[costwarden] MARKETING has reached 80% of its $1,000.00 monthly budget "
                                  "($812.40 spent); it resets 2026-12-01")
    assert message["From"] == "alerts@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    content = message.get_content()
    assert content.startswith(TEXT + "\n")
    assert "limit_usd: 1000\n" in content
    assert "period_end: 2026-12-01T05:00:00+00:00\n" in content
    assert alerts.counters.delivered["email"] == 1


async def test_email_over_starttls_with_login_from_the_environment(
        tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    # The client verifies the server against the default trust store; point that at our authority.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with smtp_server(tls_context=server_tls, require_starttls=True, auth_required=True,
                           authenticator=accept_login) as (port, inbox):
        settings = SmtpSettings.from_env({
            "COSTWARDEN_SMTP_URL": f"smtp+starttls://alerts%40corp:s%3Acret@127.0.0.1:{port}",
            "COSTWARDEN_SMTP_FROM": "finance-alerts@example.com",
        })
        assert settings is not None
        async with dispatching(AlertDispatcher(ledger, settings)) as alerts:
            alerts.submit(notification(), ("mailto:cfo@example.com",))
            [mail] = await inbox.wait_for(1)
            await drained(alerts)
    assert alerts.counters.delivered == {"email": 1}
    assert mail.tls
    assert mail.login == ("alerts@corp", "s:cret")
    assert mail.sender == "finance-alerts@example.com"
    assert TEXT in mail.message.get_content()


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"COSTWARDEN_SMTP_URL": "smtp://mail.corp"}, SmtpSettings("mail.corp", 25, "costwarden@localhost")),
    ({"COSTWARDEN_SMTP_URL": "smtp+starttls://u:p@mail.corp", "COSTWARDEN_SMTP_FROM": "a@corp"},
     SmtpSettings("mail.corp", 587, "a@corp", "u", "p", starttls=True)),
    ({"COSTWARDEN_SMTP_URL": "smtp://u@mail.corp:2525"}, SmtpSettings("mail.corp", 2525, "costwarden@localhost", "u")),
])
def test_smtp_settings_from_env(environ: dict[str, str], expected: SmtpSettings | None) -> None:
    assert SmtpSettings.from_env(environ) == expected


@pytest.mark.parametrize("url", ["http://mail.corp", "smtp://", "smtp://mail.corp:notaport"])
def test_smtp_settings_refuse_a_bad_url(url: str) -> None:
    with pytest.raises(ValueError, match="COSTWARDEN_SMTP_URL"):
        SmtpSettings.from_env({"COSTWARDEN_SMTP_URL": url})


def test_smtp_password_is_not_in_the_repr() -> None:
    assert "hunter2" not in repr(SmtpSettings("h", 25, "a@b", "u", "hunter2"))


async def test_duplicates_are_delivered_once_across_replicas(webhooks: Webhooks, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    first, second = await Ledger.open(url), await Ledger.open(url)
    try:
        async with dispatching(AlertDispatcher(first)) as one, dispatching(AlertDispatcher(second)) as two:
            targets = (webhooks.url("/hook"),)
            one.submit(notification(), targets)
            one.submit(notification(), targets)
            two.submit(notification(), targets)
            two.submit(notification("0.5", "MARKETING has reached 50%."), targets)  # another threshold
            await drained(one)
            await drained(two)
        assert sorted(body["threshold"] for body in webhooks.bodies.items) == [0.5, 0.8]
        assert one.counters.duplicates + two.counters.duplicates == 2
        assert len(await first.list_alerts()) == 2
    finally:
        await first.close()
        await second.close()


async def test_hanging_and_refusing_webhooks_hold_up_nobody(
        webhooks: Webhooks, smtp: tuple[SmtpSettings, Inbox[Mail]], ledger: Ledger) -> None:
    settings, inbox = smtp
    refused = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    alerts = AlertDispatcher(ledger, settings, webhook_timeout_s=60, delivery_timeout_s=60, backoff_s=0.01)
    async with dispatching(alerts):
        alerts.submit(notification(), (webhooks.url("/hang"), refused, webhooks.url("/hook"),
                                       "mailto:cmo@example.com"))
        await webhooks.calls.wait_for(2)  # /hang is holding its request, /hook has answered
        await webhooks.bodies.wait_for(1)
        await inbox.wait_for(1)
        # The next alert is not stuck behind the one still waiting for /hang.
        alerts.submit(notification("0.5", "MARKETING has reached 50%."), (webhooks.url("/hook"),))
        bodies = await webhooks.bodies.wait_for(2)
        assert [b["threshold"] for b in bodies] == [0.8, 0.5]
        assert not webhooks.release.is_set()
        webhooks.release.set()  # /hang now answers 500 to every attempt
        await drained(alerts)
    assert webhooks.calls.items.count("/hang") == 3
    assert alerts.counters.failed == {"webhook": 2}
    assert alerts.counters.delivered == {"webhook": 2, "email": 1}


async def test_a_target_that_never_answers_is_given_up_after_the_timeout(
        webhooks: Webhooks, ledger: Ledger) -> None:
    alerts = AlertDispatcher(ledger, webhook_timeout_s=60, delivery_timeout_s=0.2)
    async with dispatching(alerts):
        alerts.submit(notification(), (webhooks.url("/hang"), "log:"))
        await drained(alerts)
    assert alerts.counters.failed == {"webhook": 1}
    assert alerts.counters.delivered == {"log": 1}


async def test_server_errors_are_retried_and_client_errors_are_not(webhooks: Webhooks, ledger: Ledger) -> None:
    async with dispatching(AlertDispatcher(ledger, backoff_s=0.01)) as alerts:
        alerts.submit(notification(), (webhooks.url("/flaky"), webhooks.url("/gone")))
        await drained(alerts)
    assert webhooks.calls.items.count("/flaky") == 2
    assert webhooks.calls.items.count("/gone") == 1
    assert webhooks.bodies.items == [EXPECTED_PAYLOAD]
    assert alerts.counters.delivered == {"webhook": 1}
    assert alerts.counters.failed == {"webhook": 1}


async def test_a_full_queue_drops_the_oldest(
        webhooks: Webhooks, ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    alerts = AlertDispatcher(ledger, queue_size=2)
    targets = (webhooks.url("/hook"),)
    async with dispatching(alerts, start=False):
        with caplog.at_level(logging.WARNING, logger="costwarden.alerts"):
            for threshold in ("0.5", "0.8", "0.9"):
                alerts.submit(notification(threshold, f"MARKETING has reached {threshold}."), targets)
        assert alerts.counters.dropped == 1
        assert any("dropped" in r.getMessage() and "0.5" in r.getMessage() for r in caplog.records)
        await alerts.start()
        await drained(alerts)
    assert sorted(body["threshold"] for body in webhooks.bodies.items) == [0.8, 0.9]


async def test_log_targets(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        async with dispatching(AlertDispatcher(ledger)) as alerts:
            alerts.submit(notification(), ("log:", "log:finance.alerts"))
            await drained(alerts)
    records = [r for r in caplog.records if TEXT in r.getMessage()]
    assert sorted(r.name for r in records) == ["costwarden.alerts", "finance.alerts"]
    assert all(r.levelno == logging.WARNING and getattr(r, "alert", None) == EXPECTED_PAYLOAD for r in records)
    assert alerts.counters.delivered == {"log": 2}


async def test_email_disabled_is_logged_and_the_rest_still_delivered(
        webhooks: Webhooks, ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="costwarden.alerts"):
        async with dispatching(AlertDispatcher(ledger, None)) as alerts:
            alerts.submit(notification(), ("mailto:cmo@example.com", webhooks.url("/hook")))
            await drained(alerts)
    assert alerts.counters.failed == {"email": 1}
    assert alerts.counters.delivered == {"webhook": 1}
    assert any("COSTWARDEN_SMTP_URL is not set" in r.getMessage() for r in caplog.records)


class BrokenLedger:
    async def record_alert(self, alert: AlertRecord) -> bool:
        raise StorageError("database is locked")


async def test_an_unreachable_ledger_does_not_lose_the_alert(webhooks: Webhooks) -> None:
    async with dispatching(AlertDispatcher(BrokenLedger())) as alerts:
        alerts.submit(notification(), (webhooks.url("/hook"),))
        await drained(alerts)
    assert webhooks.bodies.items == [EXPECTED_PAYLOAD]


async def test_drain_before_start_returns(ledger: Ledger) -> None:
    alerts = AlertDispatcher(ledger)
    alerts.submit(notification(), ("log:",))
    await drained(alerts)  # nothing runs the queue yet: drain must not wait for it
    assert alerts.counters.delivered == {}
