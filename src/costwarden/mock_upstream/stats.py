"""Running totals of what the mock served, for ``GET /mock/stats``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Tally:
    """Counts of answered requests and the tokens they reported (input includes cached)."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def add(self, input_tokens: int, cached_tokens: int, output_tokens: int, write_5m: int, write_1h: int) -> None:
        """Count one request."""
        self.requests += 1
        self.input_tokens += input_tokens
        self.cached_input_tokens += cached_tokens
        self.output_tokens += output_tokens
        self.cache_write_5m_tokens += write_5m
        self.cache_write_1h_tokens += write_1h


class Stats:
    """Totals per app instance. The app runs on one event loop, so no lock is needed."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero everything."""
        self.total = Tally()
        self.models: dict[str, Tally] = {}
        self.errors = 0
        self.streams_cut = 0

    def record(self, model: str, input_tokens: int, cached_tokens: int, output_tokens: int,
               *, write_5m: int = 0, write_1h: int = 0, cut: bool = False) -> None:
        """Count a request that was answered with usage; ``output_tokens`` is what was sent.
        ``input_tokens`` is the whole prompt, cache reads and writes included."""
        self.total.add(input_tokens, cached_tokens, output_tokens, write_5m, write_1h)
        tally = self.models.get(model)
        if tally is None:
            tally = self.models[model] = Tally()
        tally.add(input_tokens, cached_tokens, output_tokens, write_5m, write_1h)
        if cut:
            self.streams_cut += 1

    def record_error(self) -> None:
        """Count a request answered with an error status (no usage)."""
        self.errors += 1

    def snapshot(self) -> dict[str, Any]:
        """The JSON body of ``GET /mock/stats``."""
        return {
            **asdict(self.total),
            "errors": self.errors,
            "streams_cut": self.streams_cut,
            "models": {model: asdict(tally) for model, tally in sorted(self.models.items())},
        }
