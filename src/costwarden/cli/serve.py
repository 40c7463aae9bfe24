"""costwarden serve and costwarden mock-upstream"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from costwarden.app.settings import Settings, load_settings, settings_to_environment
from costwarden.cli.common import DbOption, fail
from costwarden.http.app import create_app


def serve(
    policy: Annotated[str | None, typer.Option(help="Policy file (default: the latest stored in the database).")] = None,
    db: DbOption = None,
    redis: Annotated[str | None, typer.Option(help="Redis URL for counters shared by several replicas or workers.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (more than 1 needs --redis).")] = 1,
    max_body_mb: Annotated[int, typer.Option(help="Largest request body accepted, in MB.")] = 16,
) -> None:
    """Run the gateway."""
    if workers > 1 and not redis:
        raise fail("--workers > 1 needs --redis, so that the workers share budget counters")
    settings = load_settings(policy_path=policy, db_url=db, redis_url=redis, host=host, port=port,
                             workers=workers, max_body_mb=max_body_mb)
    run_server(settings)


def run_server(settings: Settings) -> None:
    """uvicorn with uvloop and httptools; several workers start from an import string."""
    if settings.workers > 1:
        settings_to_environment(settings)
        uvicorn.run("costwarden.http.app:app_from_environment", factory=True, workers=settings.workers,
                    host=settings.host, port=settings.port, loop="uvloop", http="httptools", access_log=False,
                    timeout_graceful_shutdown=30)
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, loop="uvloop", http="httptools",
                    access_log=False, timeout_graceful_shutdown=30)


def mock_upstream(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    latency_ms: Annotated[int, typer.Option(help="Added latency per call, in ms.")] = 0,
) -> None:
    """Run a faithful imitation of the OpenAI and Anthropic APIs (streaming included)."""
    from costwarden.mock_upstream import serve as serve_mock

    serve_mock(host, port, latency_ms)
