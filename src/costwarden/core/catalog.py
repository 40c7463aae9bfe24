"""The model catalog: what each model costs, which tier it is, and where it downgrades to."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

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
    # Derived once from the fields above: every call is priced (twice) and labelled with them.
    _picos: tuple[int, int, int] = field(init=False, repr=False, compare=False)  # input, cached, output
    price_version: str = field(init=False, repr=False, compare=False)
    """A short label of the prices in force, stored on every ledger event."""

    def __post_init__(self) -> None:
        cached = self.cached_input if self.cached_input is not None else self.input
        picos = (self.input.picos_per_token, cached.picos_per_token, self.output.picos_per_token)
        cached_label = self.cached_input.usd_per_million if self.cached_input is not None else "-"
        label = f"{self.input.usd_per_million}/{cached_label}/{self.output.usd_per_million}@{self.as_of or 'policy'}"
        object.__setattr__(self, "_picos", picos)
        object.__setattr__(self, "price_version", label)

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> int:
        """Exact cost in nano-dollars, rounded up once; ``input_tokens`` includes the cached ones."""
        per_input, per_cached, per_output = self._picos
        picos = ((input_tokens - cached_input_tokens) * per_input + cached_input_tokens * per_cached
                 + output_tokens * per_output)
        return -((-picos) // 1000)


class Catalog(Mapping[str, ModelSpec]):
    """An immutable mapping of model id to ModelSpec, with downgrade chains."""

    def __init__(self, models: Mapping[str, ModelSpec]) -> None:
        self._models = dict(models)
        self._chains: dict[str, tuple[ModelSpec, ...]] = {}  # filled on use: the catalog never changes

    def __getitem__(self, model_id: str) -> ModelSpec:
        return self._models[model_id]

    def get(self, model_id: str, default: ModelSpec | None = None) -> ModelSpec | None:  # type: ignore[override]
        return self._models.get(model_id, default)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def chain(self, model_id: str) -> tuple[ModelSpec, ...]:
        """The model followed by its ``downgrade_to`` chain (cycles are refused at load)."""
        cached = self._chains.get(model_id)
        if cached is not None:
            return cached
        chain: list[ModelSpec] = []
        seen: set[str] = set()
        current: str | None = model_id
        while current is not None and current in self._models and current not in seen:
            seen.add(current)
            spec = self._models[current]
            chain.append(spec)
            current = spec.downgrade_to
        if model_id in self._models:  # unknown ids are not kept: the cache stays as small as the catalog
            self._chains[model_id] = tuple(chain)
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
