"""What a model costs: per-token rates from `genai-prices`, turned into integer arithmetic once per model.

The price library (`genai-prices`, bundled data, works offline) knows current
OpenAI and Anthropic models, their cache read and write prices and their
long-context tiers. Asking it for every request costs ~150 µs (model matching,
Decimal arithmetic), so a model's prices are read from it once and kept as
integer micro-dollars per million tokens (`Rates`); a request's cost is then a
few integer multiplications (`Rates.cost_micro`), the same figure the library
gives (tests/test_money_prices.py checks every bundled model against it).

Money is counted in micro-dollars (1e-6 USD, integers) everywhere in poolgate:
exact in the store's integer counters, and a cent is 10,000 of them.

Token counts follow the library's convention: `input_tokens` INCLUDES cache
reads and writes (an Anthropic reply's `input_tokens` plus its cache fields),
so cached tokens are priced at their own rate and never also as input.
A model the library does not know, or a negotiated price, comes from
`PRICES_OVERRIDE` (a JSON or YAML file of USD per million tokens):

    {"my-model": {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 1.25,
                  "tiers": [{"above": 200000, "input": 2.0, "output": 3.0}]},
     "ft:gpt-4o-mini*": {"input": 0.3, "output": 1.2}}

A key ending in `*` matches every model starting with what precedes it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

MICRO = 1_000_000  # micro-dollars in a dollar
_MTOK = 1_000_000  # tokens in a rate's million
_REFRESH_SEC = 3600.0  # a library price may carry a start date: a cached rate is re-read hourly
UNKNOWN_MODEL_POLICIES = ("refuse", "free", "estimate")


@dataclass(frozen=True, slots=True)
class Band:
    """One tier of a model's prices: applies to a request whose input tokens exceed `above`.

    Rates are integer micro-dollars per million tokens ($2.50 / MTok = 2_500_000).
    """

    above: int
    input: int
    output: int
    cache_read: int
    cache_write: int


@dataclass(frozen=True, slots=True)
class Rates:
    """A model's prices; `bands` ascending by `above`, the first one (above -1) the base price."""

    model: str
    bands: tuple[Band, ...]
    source: str = "genai-prices"  # genai-prices | override | estimate | free

    def band(self, input_tokens: int) -> Band:
        # genai-prices' "cliff" tiers: past a threshold, ALL tokens pay that tier's rate.
        chosen = self.bands[0]
        for band in self.bands[1:]:
            if input_tokens > band.above:
                chosen = band
        return chosen

    def cost_micro(self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0) -> int:
        """This usage's cost in micro-dollars, rounded up. `input_tokens` includes the cache tokens."""
        b = self.band(input_tokens)
        plain = max(input_tokens - cache_read - cache_write, 0)
        pico = plain * b.input + cache_read * b.cache_read + cache_write * b.cache_write + output_tokens * b.output
        return -(-pico // _MTOK)

    def worst_case_micro(self, prompt_tokens: int, max_output_tokens: int) -> int:
        """The most a request may cost: its prompt uncached and its whole allowed output, at its tier's rate."""
        return self.cost_micro(prompt_tokens, max_output_tokens)


FREE = Rates("*", (Band(-1, 0, 0, 0, 0),), source="free")


class UnknownModelPrice(LookupError):
    """Neither the price library nor PRICES_OVERRIDE prices this model."""


class PriceBook:
    """Rates per model: PRICES_OVERRIDE first, then the price library, then UNKNOWN_MODEL_POLICY.

    `rates(model, provider)` is a dict lookup once a model has been priced; it returns None for an
    unknown model under the `refuse` policy (admission then refuses users with a budget).
    """

    def __init__(self, overrides: dict[str, Rates] | None = None, unknown_model_policy: str = "refuse") -> None:
        if unknown_model_policy not in UNKNOWN_MODEL_POLICIES:
            raise ValueError(f"UNKNOWN_MODEL_POLICY must be one of {', '.join(UNKNOWN_MODEL_POLICIES)}")
        self._exact = {k: v for k, v in (overrides or {}).items() if not k.endswith("*")}
        self._prefixes = sorted(((k[:-1], v) for k, v in (overrides or {}).items() if k.endswith("*")),
                                key=lambda kv: -len(kv[0]))
        self.unknown_model_policy = unknown_model_policy
        self._cache: dict[tuple[str, str], tuple[float, Rates | None]] = {}
        self._dearest: dict[str, Rates] = {}

    def rates(self, model: str, provider: str) -> Rates | None:
        now = time.monotonic()
        cached = self._cache.get((provider, model))
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._override(model)
        if found is None:
            try:
                found = library_rates(model, provider)
            except UnknownModelPrice:
                found = self._unknown(provider)
        self._cache[(provider, model)] = (now + _REFRESH_SEC, found)
        return found

    def _override(self, model: str) -> Rates | None:
        if model in self._exact:
            return self._exact[model]
        return next((rates for prefix, rates in self._prefixes if model.startswith(prefix)), None)

    def _unknown(self, provider: str) -> Rates | None:
        if self.unknown_model_policy == "free":
            return FREE
        if self.unknown_model_policy == "estimate":  # never undercharge: the provider's dearest known rates
            if provider not in self._dearest:
                self._dearest[provider] = dearest_rates(provider)
            return self._dearest[provider]
        return None


def library_rates(model: str, provider: str, at: datetime | None = None) -> Rates:
    """The price library's rates for a model (matched as the library matches, e.g. a dated snapshot)."""
    from genai_prices import data_snapshot  # 1.6 MB of price data: loaded when the first model is priced

    snapshot = data_snapshot.get_snapshot()
    try:
        _, info = snapshot.find_provider_model(model, None, provider, None)
    except LookupError:
        raise UnknownModelPrice(model) from None
    prices = info.get_prices(at or datetime.now(UTC))
    if getattr(prices, "input_mtok", None) is None and getattr(prices, "output_mtok", None) is None and any(
            value is not None for value in vars(prices).values()):
        # Priced by the audio hour or the character (whisper-1, tts-1): units poolgate does not count, so it
        # is a model with no known price (UNKNOWN_MODEL_POLICY), never a free one. No price at all is free.
        raise UnknownModelPrice(model)
    return _from_library(info.id, prices)


def dearest_rates(provider: str) -> Rates:
    """The highest base rate of each kind among the library's models of a provider (UNKNOWN_MODEL_POLICY=estimate)."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    now = datetime.now(UTC)
    top = [0, 0, 0, 0]
    for known in snapshot.providers:
        if known.id != provider:
            continue
        for info in known.models:
            try:
                base = _from_library(info.id, info.get_prices(now)).bands[-1]
            except Exception:  # a model priced in units poolgate does not count
                continue
            rates = (base.input, base.output, base.cache_read, base.cache_write)
            top = [max(t, v) for t, v in zip(top, rates, strict=True)]
    return Rates("*", (Band(-1, *top),), source="estimate")


def _from_library(model_id: str, prices: Any) -> Rates:
    fields = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
    values = {name: getattr(prices, name, None) for name in fields}
    starts = sorted({tier.start for v in values.values() if v is not None and hasattr(v, "tiers") for tier in v.tiers})
    bands = []
    for above in (-1, *starts):
        per = {name: _micro(_at_tier(value, above)) for name, value in values.items()}
        plain = per["input_mtok"]
        bands.append(Band(
            above, plain, per["output_mtok"],
            # No separate cache price: the library prices those tokens as plain input.
            per["cache_read_mtok"] if values["cache_read_mtok"] is not None else plain,
            per["cache_write_mtok"] if values["cache_write_mtok"] is not None else plain,
        ))
    return Rates(model_id, tuple(bands))


def _at_tier(value: Any, above: int) -> Decimal:
    if value is None:
        return Decimal(0)
    if not hasattr(value, "tiers"):
        return Decimal(value)
    price = value.base
    for tier in value.tiers:
        if above >= tier.start:
            price = tier.price
    return Decimal(price)


def _micro(usd_per_mtok: Decimal | float) -> int:
    return int((Decimal(str(usd_per_mtok)) * MICRO).to_integral_value())


def load_overrides(path: str) -> dict[str, Rates]:
    """PRICES_OVERRIDE: a JSON or YAML file of model -> USD per million tokens (module docstring)."""
    if not path:
        return {}
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        raw = yaml.safe_load(text) or {}
    else:
        raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"PRICES_OVERRIDE {path}: expected a mapping of model names to prices")
    return {str(model): _override_rates(str(model), spec, path) for model, spec in raw.items()}


def _override_rates(model: str, spec: Any, path: str) -> Rates:
    if not isinstance(spec, dict) or "input" not in spec or "output" not in spec:
        raise ValueError(f"PRICES_OVERRIDE {path}: {model!r} needs at least `input` and `output` (USD per MTok)")

    def band(part: dict[str, Any], above: int, base: Band | None) -> Band:
        def rate(name: str, fallback: int) -> int:
            value = part.get(name)
            if value is None:
                return fallback
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 or math.isnan(value):
                raise ValueError(f"PRICES_OVERRIDE {path}: {model!r} {name} must be a number >= 0")
            return _micro(value)

        plain = rate("input", base.input if base else 0)
        return Band(above, plain, rate("output", base.output if base else 0),
                    rate("cache_read", base.cache_read if base else plain),
                    rate("cache_write", base.cache_write if base else plain))

    first = band(spec, -1, None)
    tiers = [band(t, int(t.get("above", 0)), first) for t in spec.get("tiers", []) if isinstance(t, dict)]
    return Rates(model, (first, *sorted(tiers, key=lambda b: b.above)), source="override")
