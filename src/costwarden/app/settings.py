"""Runtime settings: read once, explicitly, from arguments and the environment (nowhere else)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from costwarden.errors import ConfigurationError
from costwarden.ledger.outage import WhenDown

DEFAULT_DB = "sqlite:///./costwarden.db"


@dataclass(frozen=True, slots=True)
class Settings:
    policy_path: str | None = None
    db_url: str = DEFAULT_DB
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_mb: int = 16
    admin_token: str | None = None
    key_refresh_s: float = 2.0
    environ: Mapping[str, str] = field(default_factory=dict)  # for upstream API keys and SMTP
    # Variables a policy loaded through the admin API may name as api_key_env; None: those the
    # start-up policy names (SPEC section 10).
    upstream_env: tuple[str, ...] | None = None
    header_timeout_s: float = 10.0  # a request head must arrive within this
    body_timeout_s: float = 60.0  # and its body within this after the head
    # Where the ledger spools rows its database cannot take (None: beside a SQLite file, else
    # ./costwarden-spool), and whether new calls are refused or spooled meanwhile.
    spool_dir: str | None = None
    ledger_down: WhenDown = WhenDown.REFUSE
    # How often counters are compared with the ledger, and how long a replica's lease lasts
    # without renewal before other replicas release its reservations (SPEC section 10).
    reconcile_s: float = 30.0
    lease_ttl_s: float = 10.0
    watch_s: float = 60.0  # how often the watched alerts (forecast, anomaly) are evaluated

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 1024 * 1024


def db_url_from_env(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--db`` if given, else ``COSTWARDEN_DB``, else the SQLite file in the working directory."""
    env = os.environ if environ is None else environ
    return explicit or env.get("COSTWARDEN_DB") or DEFAULT_DB


def load_settings(*, policy_path: str | None, db_url: str | None = None, redis_url: str | None = None,
                  host: str = "127.0.0.1", port: int = 8000, workers: int = 1, max_body_mb: int = 16,
                  upstream_env: tuple[str, ...] | None = None, header_timeout_s: float = 10.0,
                  body_timeout_s: float = 60.0, spool_dir: str | None = None, ledger_down: str | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for a server: explicit arguments first, then COSTWARDEN_* variables."""
    env = dict(os.environ if environ is None else environ)
    when_down = ledger_down or env.get("COSTWARDEN_WHEN_LEDGER_DOWN") or WhenDown.REFUSE
    if when_down not in tuple(WhenDown):
        raise ConfigurationError(f"--when-ledger-down (or COSTWARDEN_WHEN_LEDGER_DOWN) {when_down!r}: use refuse or spool")
    return Settings(
        policy_path=policy_path,
        db_url=db_url_from_env(db_url, env),
        redis_url=redis_url or env.get("COSTWARDEN_REDIS") or None,
        host=host,
        port=port,
        workers=workers,
        max_body_mb=max_body_mb,
        admin_token=env.get("COSTWARDEN_ADMIN_TOKEN") or None,
        environ=env,
        upstream_env=upstream_env,
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        spool_dir=spool_dir or env.get("COSTWARDEN_SPOOL") or None,
        ledger_down=WhenDown(when_down),
        reconcile_s=_seconds(env, "COSTWARDEN_RECONCILE_S", 30.0),
        lease_ttl_s=_seconds(env, "COSTWARDEN_LEASE_TTL_S", 10.0),
        watch_s=_seconds(env, "COSTWARDEN_WATCH_S", 60.0),
    )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{name}={text!r} is not a number of seconds") from None
    if not 0 < value < 86400:
        raise ConfigurationError(f"{name}={text!r} must be between 0 and 86400 seconds")
    return value


_ENV_KEYS = {"policy_path": "COSTWARDEN_POLICY", "db_url": "COSTWARDEN_DB", "redis_url": "COSTWARDEN_REDIS",
             "max_body_mb": "COSTWARDEN_MAX_BODY_MB", "spool_dir": "COSTWARDEN_SPOOL",
             "ledger_down": "COSTWARDEN_WHEN_LEDGER_DOWN"}
_UPSTREAM_ENV = "COSTWARDEN_UPSTREAM_ENV"  # comma-separated, for worker processes


def settings_to_environment(settings: Settings) -> None:
    """Hand settings to worker processes (uvicorn starts them from an import string)."""
    for name, variable in _ENV_KEYS.items():
        value = getattr(settings, name)
        if value is not None:
            os.environ[variable] = str(value)
    if settings.upstream_env is not None:
        os.environ[_UPSTREAM_ENV] = ",".join(settings.upstream_env)


def settings_from_environment() -> Settings:
    """The settings a worker process was handed by ``settings_to_environment``."""
    allowed = os.environ.get(_UPSTREAM_ENV)
    return load_settings(policy_path=os.environ.get("COSTWARDEN_POLICY"),
                         max_body_mb=int(os.environ.get("COSTWARDEN_MAX_BODY_MB", "16")),
                         upstream_env=None if allowed is None else tuple(filter(None, allowed.split(","))))
