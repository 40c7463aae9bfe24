"""``python -m costwarden.mock_upstream [--host H] [--port P] [--latency-ms N] [--media-tokens N]``: the mock alone,
without the rest of the command line (tests run it as a separate process this way)."""

from __future__ import annotations

import argparse

from costwarden.mock_upstream.server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the options and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m costwarden.mock_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--media-tokens", type=int, default=0, help="input tokens each media part adds")
    options = parser.parse_args(argv)
    serve(options.host, options.port, options.latency_ms, media_tokens=options.media_tokens)


if __name__ == "__main__":
    main()
