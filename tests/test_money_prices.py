"""Prices: hand-computed figures for a few models (cache reads and writes, a long-context tier), the price library
agreeing with poolgate's integer arithmetic for every model it bundles, PRICES_OVERRIDE and UNKNOWN_MODEL_POLICY."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price, data_snapshot

from catalog.prices import PriceBook, UnknownModelPrice, library_rates, load_overrides

# (model, provider, input tokens INCLUDING cache tokens, cache reads, cache writes, output tokens, USD by hand)
HAND_COMPUTED = [
    # gpt-4o: $2.50 in, $1.25 cached in, $10 out per MTok. 900k plain + 100k cached.
    ("gpt-4o", "openai", 1_000_000, 100_000, 0, 0, "2.375"),
    # gpt-4o-mini: $0.15 in, $0.60 out. 1,000 in and 500 out: 150 + 300 micro-dollars.
    ("gpt-4o-mini", "openai", 1_000, 0, 0, 500, "0.00045"),
    # claude-sonnet-4-5 (a dated snapshot name): $3 in, $0.30 cache read, $3.75 cache write, $15 out.
    # 70k plain + 20k read + 10k written, 5k out: 0.21 + 0.006 + 0.0375 + 0.075.
    ("claude-sonnet-4-5-20250929", "anthropic", 100_000, 20_000, 10_000, 5_000, "0.3285"),
    # Past 200k input tokens the long-context tier prices ALL tokens: $6 in, $22.50 out. 1.5 + 0.0225.
    ("claude-sonnet-4-5", "anthropic", 250_000, 0, 0, 1_000, "1.5225"),
    # The same request one token under the tier: $3 and $15. 0.6 + 0.015.
    ("claude-sonnet-4-5", "anthropic", 200_000, 0, 0, 1_000, "0.615"),
    # claude-haiku-4-5: $1 in, $0.10 cache read, $5 out. 10k plain + 90k read, 2k out: 0.01 + 0.009 + 0.01.
    ("claude-haiku-4-5", "anthropic", 100_000, 90_000, 0, 2_000, "0.029"),
]


@pytest.mark.parametrize(("model", "provider", "inp", "read", "write", "out", "usd"), HAND_COMPUTED)
def test_a_requests_cost_matches_the_hand_computed_figure(model, provider, inp, read, write, out, usd):
    cost = library_rates(model, provider).cost_micro(inp, out, read, write)
    assert cost == int(Decimal(usd) * 1_000_000)


def test_cached_tokens_are_priced_once_at_their_own_rate_never_again_as_input():
    rates = library_rates("gpt-4o", "openai")
    all_cached = rates.cost_micro(1_000_000, 0, cache_read=1_000_000)
    assert all_cached == 1_250_000  # $1.25 a million cached, not $1.25 + $2.50
    written = library_rates("claude-sonnet-4-5", "anthropic").cost_micro(1_000, 0, cache_write=1_000)
    assert written == 3_750  # $3.75 a million written, not $3.75 + $3


def test_every_bundled_openai_and_anthropic_model_costs_what_the_price_library_says():
    """poolgate prices with integers precomputed once per model; the library with Decimals each time."""
    randomness = random.Random(13)
    checked = 0
    for provider in data_snapshot.get_snapshot().providers:
        if provider.id not in ("openai", "anthropic"):
            continue
        for model in provider.models:
            if model.id.startswith("ft:"):
                continue  # fine-tunes: the library does not match its own ids for them
            try:
                rates = library_rates(model.id, provider.id)
            except UnknownModelPrice:  # priced by the hour or the character: refused, tested below
                continue
            for _ in range(5):
                inp = randomness.choice([10, 5_000, 199_999, 200_001, 300_000, 1_100_000])
                read, write = randomness.randint(0, inp // 2), randomness.randint(0, inp // 3)
                out = randomness.randint(0, 60_000)
                usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write)
                expected = calc_price(usage, model.id, provider_id=provider.id).total_price * 1_000_000
                assert abs(rates.cost_micro(inp, out, read, write) - expected) < 1, model.id
                checked += 1
    assert checked > 500


def test_prices_override_prices_unknown_models_and_beats_the_library(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({
        "gpt-4o": {"input": 1.0, "output": 2.0},  # a negotiated price
        "local-llm": {"input": 0.5, "output": 1.5, "cache_read": 0.05,
                      "tiers": [{"above": 100000, "input": 1.0, "output": 3.0}]},
        "ft:gpt-4o-mini*": {"input": 0.3, "output": 1.2},
    }))
    book = PriceBook(load_overrides(str(path)))
    assert book.rates("gpt-4o", "openai").cost_micro(1_000_000, 1_000_000) == 3_000_000
    local = book.rates("local-llm", "openai")
    assert local.cost_micro(10_000, 1_000, cache_read=5_000) == 5_000 * 0.5 + 5_000 * 0.05 + 1_000 * 1.5
    assert local.cost_micro(200_000, 1_000) == 200_000 * 1.0 + 1_000 * 3.0  # past the tier
    assert book.rates("ft:gpt-4o-mini:acme:v1", "openai").cost_micro(1_000_000, 0) == 300_000


def test_prices_override_may_be_yaml(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("my-model:\n  input: 2\n  output: 4\n")
    assert PriceBook(load_overrides(str(path))).rates("my-model", "openai").cost_micro(1_000, 1_000) == 6_000


def test_an_override_without_input_and_output_is_a_clear_error(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-model": {"input": 1}}))
    with pytest.raises(ValueError, match=r"my-model.*needs at least `input` and `output`"):
        load_overrides(str(path))


def test_unknown_models_follow_the_unknown_model_policy():
    assert PriceBook(unknown_model_policy="refuse").rates("no-such-model", "openai") is None
    assert PriceBook(unknown_model_policy="free").rates("no-such-model", "openai").cost_micro(10**6, 10**6) == 0
    estimate = PriceBook(unknown_model_policy="estimate").rates("no-such-model", "openai")
    dearest_known = library_rates("o1-pro", "openai")  # never undercharged: at least the dearest model's price
    assert estimate.cost_micro(1_000, 1_000) >= dearest_known.cost_micro(1_000, 1_000)


def test_models_priced_in_units_poolgate_does_not_count_are_unknown_not_free():
    book = PriceBook(unknown_model_policy="refuse")
    assert book.rates("whisper-1", "openai") is None  # by the audio hour
    assert book.rates("tts-1", "openai") is None  # by the character
    assert book.rates("omni-moderation-latest", "openai").cost_micro(10**6, 0) == 0  # genuinely free
