"""The model catalog: what each model costs, which tier it is, and where it downgrades to."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from costwarden.core.money import Price

TIERS = (1, 2, 3)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model's commercial and technical facts. Prices are USD per 1M tokens."""

    id: str
    provider: str
    tier: int
    input: Price
    output: Price
    cached_input: Price | None = None
    context_window: int = 128_000
    max_output: int = 4_096
    downgrade_to: str | None = None
    kind: str = "chat"  # chat | embedding
    source: str = ""
    as_of: str = ""

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> int:
        """Exact cost in nano-dollars, rounded up once; ``input_tokens`` includes the cached ones."""
        cached = self.cached_input if self.cached_input is not None else self.input
        picos = ((input_tokens - cached_input_tokens) * self.input.picos_per_token
                 + cached_input_tokens * cached.picos_per_token + output_tokens * self.output.picos_per_token)
        return -((-picos) // 1000)

    @property
    def price_version(self) -> str:
        """A short label of the prices in force, stored on every ledger event."""
        cached = self.cached_input.usd_per_million if self.cached_input is not None else "-"
        return f"{self.input.usd_per_million}/{cached}/{self.output.usd_per_million}@{self.as_of or 'policy'}"


class Catalog(Mapping[str, ModelSpec]):
    """An immutable mapping of model id to ModelSpec, with downgrade chains."""

    def __init__(self, models: Mapping[str, ModelSpec]) -> None:
        self._models = dict(models)

    def __getitem__(self, model_id: str) -> ModelSpec:
        return self._models[model_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def chain(self, model_id: str) -> tuple[ModelSpec, ...]:
        """The model followed by its ``downgrade_to`` chain (cycles are refused at load)."""
        chain: list[ModelSpec] = []
        seen: set[str] = set()
        current: str | None = model_id
        while current is not None and current in self._models and current not in seen:
            seen.add(current)
            spec = self._models[current]
            chain.append(spec)
            current = spec.downgrade_to
        return tuple(chain)

    def downgrade_cycle(self, model_id: str) -> list[str] | None:
        """The cycle reached from ``model_id`` through ``downgrade_to``, if there is one."""
        path: list[str] = []
        current: str | None = model_id
        while current is not None and current in self._models:
            if current in path:
                return [*path[path.index(current):], current]
            path.append(current)
            current = self._models[current].downgrade_to
        return None
