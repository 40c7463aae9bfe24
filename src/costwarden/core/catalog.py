"""The model catalog: what each model costs, which tier it is, and where it downgrades to.

A call may name a model by its id, a snapshot or alias of it, or with a provider prefix
(SPEC section 9); ``Catalog.resolve`` finds the one entry whose prices and rights apply.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from costwarden.core.model_ids import base_ids, follows_rule, split_prefix
from costwarden.core.money import Price
from costwarden.core.pricing import Charge, Prices, Pricing, ServiceTier, TierPrices, TokenType, ToolFee

TIERS = (1, 2, 3)
RESOLVED_CACHE_SIZE = 4096  # ids that are not entries, resolved or not; bounded against junk ids


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
    cache_write_5m: Price | None = None  # unset: the input price
    cache_write_1h: Price | None = None
    audio: Price | None = None
    image: Price | None = None
    long_context_above: int | None = None  # prompt tokens above which ``long_context`` applies
    long_context: Prices | None = None  # to the whole call, as Anthropic and Google bill it
    service_tiers: tuple[TierPrices, ...] = ()
    tool_fees: tuple[ToolFee, ...] = ()
    snapshots: tuple[str, ...] = ()  # dated ids of this model at the same prices
    aliases: tuple[str, ...] = ()  # other names (``-latest``, ``-0``, a policy's own)
    history: tuple[PriceEra, ...] = field(default=(), compare=False)
    """Earlier prices, oldest first: the entry as priced before each ``until`` (SPEC §9 imports)."""
    # Derived once from the fields above: every call is priced (twice) and labelled with them.
    _picos: tuple[int, int, int] = field(init=False, repr=False, compare=False)  # input, cached, output
    price_version: str = field(init=False, repr=False, compare=False)
    """A short label of the prices in force, stored on every ledger event."""
    pricing: Pricing = field(init=False, repr=False, compare=False)
    """Every price of the model, with a rate table per service tier and context size."""

    def __post_init__(self) -> None:
        cached = self.cached_input if self.cached_input is not None else self.input
        picos = (self.input.picos_per_token, cached.picos_per_token, self.output.picos_per_token)
        cached_label = self.cached_input.usd_per_million if self.cached_input is not None else "-"
        prices = f"{self.input.usd_per_million}/{cached_label}/{self.output.usd_per_million}"
        if self.cache_write_5m is not None or self.cache_write_1h is not None:  # /5-minute/1-hour cache writes
            prices += "".join(f"/{p.usd_per_million if p is not None else '-'}"
                              for p in (self.cache_write_5m, self.cache_write_1h))
        label = f"{prices}@{self.as_of or 'policy'}"
        object.__setattr__(self, "_picos", picos)
        object.__setattr__(self, "price_version", label)
        standard = Prices(self.input, self.output, self.cached_input, self.cache_write_5m, self.cache_write_1h,
                          self.audio, self.image)
        object.__setattr__(self, "pricing", Pricing(standard, self.long_context_above, self.long_context,
                                                    self.service_tiers, self.tool_fees))

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> int:
        """Exact cost in nano-dollars, rounded up once; ``input_tokens`` includes the cached ones.

        A prompt above the model's long-context threshold is priced at the long-context rates,
        so that a worst-case estimate is never below the bill."""
        if self.long_context_above is not None and input_tokens > self.long_context_above:
            return self.pricing.charge({TokenType.INPUT: input_tokens - cached_input_tokens,
                                        TokenType.CACHED_INPUT: cached_input_tokens,
                                        TokenType.OUTPUT: output_tokens}).nanos
        per_input, per_cached, per_output = self._picos
        picos = ((input_tokens - cached_input_tokens) * per_input + cached_input_tokens * per_cached
                 + output_tokens * per_output)
        return -((-picos) // 1000)

    def charge(self, tokens: Mapping[TokenType, int], tier: ServiceTier = ServiceTier.STANDARD,
               tool_calls: Mapping[str, int] | None = None) -> Charge:
        """The exact cost of a call by token type, service tier and tool calls (``Pricing.charge``)."""
        return self.pricing.charge(tokens, tier, tool_calls)

    def at(self, when: datetime) -> ModelSpec:
        """The entry as priced at ``when``: the earlier prices whose era holds it, else its own."""
        for era in self.history:
            if when < era.until:
                return era.spec
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Every id this entry answers to: its own, its snapshots and its aliases."""
        return (self.id, *self.snapshots, *self.aliases)


@dataclass(frozen=True, slots=True)
class PriceEra:
    """A model's prices before ``until`` (a UTC instant): the entry as it was priced then."""

    until: datetime
    spec: ModelSpec


@dataclass(frozen=True, slots=True)
class Resolution:
    """The entry a model id resolves to, and the id to send upstream (the one sent, less a
    provider prefix)."""

    spec: ModelSpec
    upstream_id: str


class Catalog(Mapping[str, ModelSpec]):
    """An immutable mapping of model id to ModelSpec, with downgrade chains.

    The mapping holds entries by their own ids only; ``resolve`` also accepts snapshots, aliases
    and provider prefixes.
    """

    def __init__(self, models: Mapping[str, ModelSpec]) -> None:
        self._models = dict(models)
        self._chains: dict[str, tuple[ModelSpec, ...]] = {}  # filled on use: the catalog never changes
        self._names: dict[str, ModelSpec] = {}
        self.conflicts: list[tuple[str, str, str]] = []
        """(name, entry that keeps it, entry refused it): a name two entries claim goes to the first."""
        for spec in self._models.values():
            for name in (*spec.snapshots, *spec.aliases):
                owner = self._models.get(name) or self._names.get(name)
                if owner is not None and owner is not spec:
                    self.conflicts.append((name, owner.id, spec.id))
                else:
                    self._names[name] = spec
        self._resolved: dict[str, Resolution | None] = {}

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

    def resolve(self, model_id: str) -> ModelSpec | None:
        """The entry a model id names (an id, snapshot, alias or prefixed id), or None."""
        spec = self._models.get(model_id)
        if spec is not None:
            return spec
        found = self.resolution(model_id)
        return found.spec if found is not None else None

    def resolve_at(self, model_id: str, when: datetime) -> ModelSpec | None:
        """The entry ``model_id`` names, as priced at ``when`` (``ModelSpec.at``), or None."""
        spec = self.resolve(model_id)
        return None if spec is None else spec.at(when)

    def resolution(self, model_id: str) -> Resolution | None:
        """The entry ``model_id`` resolves to and the id to forward upstream, or None."""
        spec = self._models.get(model_id)
        if spec is not None:
            return Resolution(spec, model_id)
        try:
            return self._resolved[model_id]
        except KeyError:
            pass
        found = self._find(model_id)
        if len(self._resolved) >= RESOLVED_CACHE_SIZE:
            del self._resolved[next(iter(self._resolved))]  # the oldest first: ids in use come back
        self._resolved[model_id] = found
        return found

    def _find(self, model_id: str) -> Resolution | None:
        spec = self._named(model_id)
        if spec is not None:
            return Resolution(spec, model_id)
        prefixed = split_prefix(model_id)
        if prefixed is None:
            return None
        provider, rest = prefixed
        spec = self._named(rest)
        if spec is None or spec.provider != provider:
            return None
        return Resolution(spec, rest)

    def _named(self, name: str) -> ModelSpec | None:
        """An entry by id, snapshot or alias, else by its provider's naming rule."""
        spec = self._models.get(name) or self._names.get(name)
        if spec is not None:
            return spec
        for base, rule_provider in base_ids(name):
            spec = self._models.get(base) or self._names.get(base)
            if spec is not None and follows_rule(rule_provider, spec.provider):
                return spec
        return None

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


class CatalogTimeline:
    """The catalogs of successive policy versions, each in force from the time it was adopted: a
    call is priced by the one in force when it was admitted (the first for calls before any).
    Catalogs are built on first use, since a ledger may keep many versions and a file uses few."""

    def __init__(self, versions: Sequence[tuple[datetime, Callable[[], Catalog]]]) -> None:
        if not versions:
            raise ValueError("a catalog timeline needs at least one catalog")
        self._since = [since for since, _ in versions]
        self._load = [load for _, load in versions]
        self._built: dict[int, Catalog] = {}

    def catalog_at(self, when: datetime) -> Catalog:
        """The catalog in force at ``when``."""
        index = max(bisect_right(self._since, when) - 1, 0)
        built = self._built.get(index)
        if built is None:
            built = self._built[index] = self._load[index]()
        return built

    def resolve_at(self, model_id: str, when: datetime) -> ModelSpec | None:
        """The entry ``model_id`` names in the catalog in force at ``when``, as priced then."""
        return self.catalog_at(when).resolve_at(model_id, when)
