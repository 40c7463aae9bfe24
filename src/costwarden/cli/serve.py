"""costwarden serve and costwarden mock-upstream"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from costwarden.app.preflight import preflight
from costwarden.app.settings import Settings, load_settings, settings_to_environment
from costwarden.cli.common import DbOption, fail, listen_or_fail, run
from costwarden.errors import ConfigurationError
from costwarden.http.app import create_app
from costwarden.http.timeouts import raise_fd_limit, server_options
from costwarden.ledger.outage import WhenDown


def serve(
    policy: Annotated[str | None, typer.Option(help="Policy file (default: the latest stored in the database).")] = None,
    db: DbOption = None,
    redis: Annotated[str | None, typer.Option(help="Redis URL for counters shared by several replicas or workers.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (more than 1 needs --redis).")] = 1,
    max_body_mb: Annotated[int, typer.Option(help="Largest request body accepted, in MB.")] = 16,
    upstream_env: Annotated[list[str] | None, typer.Option(
        "--upstream-env", metavar="NAME",
        help="An environment variable a policy reloaded through the admin API may send upstream as an API key "
             "(repeatable; default: the variables the start-up policy names).")] = None,
    header_timeout_s: Annotated[float, typer.Option(min=0.1, help="Seconds a request head may take to arrive.")] = 10.0,
    body_timeout_s: Annotated[float, typer.Option(min=0.1, help="Seconds a request body may take after its head.")] = 60.0,
    spool: Annotated[str | None, typer.Option(
        metavar="DIR", help="Directory of the durable spool that keeps usage rows while the ledger database is "
                            "unreachable (env COSTWARDEN_SPOOL; default: beside a SQLite file, else "
                            "./costwarden-spool).")] = None,
    when_ledger_down: Annotated[WhenDown | None, typer.Option(
        help="While the ledger database is unreachable, refuse new calls before forwarding them (503), or "
             "accept them into the spool (default: refuse).")] = None,
) -> None:
    """Run the gateway."""
    # a number out of range is a configuration mistake like any other: one line (SPEC section 10)
    if workers < 1:
        raise fail(f"--workers {workers}: at least 1")
    if max_body_mb < 1:
        raise fail(f"--max-body-mb {max_body_mb}: at least 1")
    if workers > 1 and not redis:
        raise fail("--workers > 1 needs --redis, so that the workers share budget counters")
    try:
        settings = load_settings(policy_path=policy, db_url=db, redis_url=redis, host=host, port=port,
                                 workers=workers, max_body_mb=max_body_mb,
                                 upstream_env=tuple(upstream_env) if upstream_env is not None else None,
                                 header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
                                 spool_dir=spool, ledger_down=when_ledger_down)
    except ConfigurationError as exc:  # a bad COSTWARDEN_* variable
        raise fail(exc.message) from None
    run(lambda: preflight(settings))  # a configuration mistake ends here, in one line
    run_server(settings)


def run_server(settings: Settings) -> None:
    """uvicorn with uvloop and httptools (with read timeouts); several workers start from an import string."""
    # the timed httptools protocol, backlog and connection caps sized to the descriptor limit
    options = server_options(settings.header_timeout_s, settings.body_timeout_s, raise_fd_limit())
    if settings.workers > 1:
        settings_to_environment(settings)
        uvicorn.run("costwarden.http.app:app_from_environment", factory=True, workers=settings.workers,
                    host=settings.host, port=settings.port, loop="uvloop", access_log=False,
                    timeout_graceful_shutdown=30, **options)
    else:
        uvicorn.run(create_app(settings, freeze_gc=True), host=settings.host, port=settings.port, loop="uvloop",
                    access_log=False, timeout_graceful_shutdown=30, **options)


def mock_upstream(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    latency_ms: Annotated[int, typer.Option(min=0, help="Added latency per call, in ms.")] = 0,
) -> None:
    """Run a faithful imitation of the OpenAI and Anthropic APIs (streaming included)."""
    from costwarden.mock_upstream import serve as serve_mock

    listen_or_fail(host, port)
    serve_mock(host, port, latency_ms)
