"""What ``serve`` checks before it starts listening, so that a configuration mistake ends the
command with one clear line instead of a traceback from inside the server's start-up."""

from __future__ import annotations

import socket

from costwarden import errors
from costwarden.alerts import SmtpSettings
from costwarden.app.bootstrap import policy_for
from costwarden.app.settings import Settings
from costwarden.core.policy import Policy
from costwarden.counters import open_store
from costwarden.ledger import Ledger
from costwarden.policy import env_problems


async def preflight(settings: Settings) -> Policy:
    """The start-up policy, once the policy, the database and Redis URLs, the SMTP settings and
    the upstream allow-list are known to be usable; else ConfigurationError (or StorageError when
    a store is configured correctly but unreachable), each with a one-line message."""
    check_listen(settings.host, settings.port)
    smtp_settings(settings)
    await _check_counter_store(settings.redis_url)
    # opened as the server will open it (the same spool, which it replays, as the server would)
    ledger = await Ledger.open(settings.db_url, spool_dir=settings.spool_dir, when_down=settings.ledger_down)
    try:
        policy = await policy_for(ledger, settings.policy_path)
    except errors.PolicyError as exc:
        raise errors.ConfigurationError(one_line(exc)) from None
    finally:
        await ledger.close()
    if policy is None:
        raise errors.ConfigurationError("no --policy given, and this database has no policy stored by an earlier "
                                        "start: give the policy file with --policy")
    if settings.upstream_env is not None:
        problems = env_problems(policy, settings.upstream_env)
        if problems:
            raise errors.ConfigurationError("the start-up policy names variables --upstream-env does not allow: "
                                            + "; ".join(problems))
    return policy


def one_line(exc: errors.PolicyError) -> str:
    """``policy.yaml is invalid: a (line 3); b (line 9)``: every problem, on one line."""
    head = exc.message.splitlines()[0].rstrip(":")
    return f"{head}: {'; '.join(exc.problems)}"


def check_listen(host: str, port: int, option: str = "--port") -> None:
    """Bind ``host:port`` once, as the server will, so that a port in use or out of range, or a host
    that is no interface of this machine, is one line (ConfigurationError) rather than the server's
    log after its whole start-up."""
    if not 0 <= port <= 65535:
        raise errors.ConfigurationError(f"{option} {port}: a port is a number from 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise errors.ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def smtp_settings(settings: Settings) -> SmtpSettings | None:
    """The alert e-mail settings, or ConfigurationError naming the bad variable."""
    try:
        return SmtpSettings.from_env(settings.environ)
    except ValueError as exc:
        raise errors.ConfigurationError(str(exc)) from None


async def _check_counter_store(url: str | None) -> None:
    try:
        store = open_store(url)
    except ValueError as exc:  # an unknown scheme, or a URL redis cannot parse
        raise errors.ConfigurationError(f"--redis: {exc}") from None
    try:
        await store.ping()
    finally:
        await store.close()


__all__ = ["check_listen", "one_line", "preflight", "smtp_settings"]
