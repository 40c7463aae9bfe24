"""Runtime settings: read once, explicitly, from arguments and the environment (nowhere else)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 1024 * 1024


def db_url_from_env(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--db`` if given, else ``COSTWARDEN_DB``, else the SQLite file in the working directory."""
    env = os.environ if environ is None else environ
    return explicit or env.get("COSTWARDEN_DB") or DEFAULT_DB


def load_settings(*, policy_path: str | None, db_url: str | None = None, redis_url: str | None = None,
                  host: str = "127.0.0.1", port: int = 8000, workers: int = 1, max_body_mb: int = 16,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for a server: explicit arguments first, then COSTWARDEN_* variables."""
    env = dict(os.environ if environ is None else environ)
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
    )


_ENV_KEYS = {"policy_path": "COSTWARDEN_POLICY", "db_url": "COSTWARDEN_DB", "redis_url": "COSTWARDEN_REDIS",
             "max_body_mb": "COSTWARDEN_MAX_BODY_MB"}


def settings_to_environment(settings: Settings) -> None:
    """Hand settings to worker processes (uvicorn starts them from an import string)."""
    for name, variable in _ENV_KEYS.items():
        value = getattr(settings, name)
        if value is not None:
            os.environ[variable] = str(value)


def settings_from_environment() -> Settings:
    """The settings a worker process was handed by ``settings_to_environment``."""
    return load_settings(policy_path=os.environ.get("COSTWARDEN_POLICY"),
                         max_body_mb=int(os.environ.get("COSTWARDEN_MAX_BODY_MB", "16")))
