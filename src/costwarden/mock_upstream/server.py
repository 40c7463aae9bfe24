"""Running the mock upstream under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from costwarden.mock_upstream.app import create_app

_CUT_MESSAGE = "ASGI callable returned without completing response."


class _QuietCuts(logging.Filter):
    """Drops uvicorn's report of a response left incomplete: that is how streams are cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _CUT_MESSAGE


def make_server(host: str = "127.0.0.1", port: int = 8001, latency_ms: int = 0, *,
                media_tokens: int = 0) -> uvicorn.Server:
    """A uvicorn server for a fresh mock app (uvloop and httptools when installed, no access log).

    Run it with ``server.run()`` (or ``server.run(sockets=[...])``); stop it with
    ``server.should_exit = True``.
    """
    config = uvicorn.Config(
        create_app(latency_ms, media_tokens=media_tokens),
        host=host,
        port=port,
        loop="auto",
        http="auto",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietCuts) for f in logger.filters):
        logger.addFilter(_QuietCuts())
    return uvicorn.Server(config)


def serve(host: str = "127.0.0.1", port: int = 8001, latency_ms: int = 0, *, media_tokens: int = 0) -> None:
    """Serve the mock upstream until interrupted."""
    make_server(host, port, latency_ms, media_tokens=media_tokens).run()
