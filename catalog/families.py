"""Which model family a model name belongs to.

Families are what keys serve, what queues are kept per, and what the status
page counts. Patterns, not exact names, so dated releases (`gpt-4o-2024-08-06`,
`claude-sonnet-4-5-20250929`) land in the right family without a code change.
"""

from __future__ import annotations

import re
from functools import lru_cache

# First match wins: more specific patterns come first.
_OPENAI_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"^(text-embedding|text-search|text-similarity)", "embeddings"),
    (r"^(dall-e|gpt-image)", "images"),
    (r"^(whisper|tts|gpt-4o(-mini)?-(transcribe|tts))", "audio"),
    (r"^(omni-)?moderation|^text-moderation", "moderation"),
    (r"^gpt-4\.1-(mini|nano)", "gpt-4.1-mini"),
    (r"^gpt-4\.1", "gpt-4.1"),
    (r"^gpt-4o-mini", "gpt-4o-mini"),
    (r"^(chatgpt-4o|gpt-4o)", "gpt-4o"),
    (r"^gpt-4-(turbo|\d{4}-preview|vision)|^gpt-4-1106|^gpt-4-0125", "gpt-4-turbo"),
    (r"^gpt-4-32k", "gpt-4-32k"),
    (r"^gpt-4(-|$)", "gpt-4"),
    (r"^gpt-3\.5-turbo|^babbage|^davinci", "turbo"),
    (r"^o\d(-mini|-pro)?", "o-series"),
    (r"^gpt-5", "gpt-5"),
)
_ANTHROPIC_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"opus", "claude-opus"),
    (r"haiku", "claude-haiku"),
    (r"sonnet|^claude", "claude-sonnet"),
)
DEFAULT_FAMILY = {"openai": "openai-other", "anthropic": "claude-other"}

_COMPILED = {
    "openai": tuple((re.compile(p), f) for p, f in _OPENAI_FAMILIES),
    "anthropic": tuple((re.compile(p), f) for p, f in _ANTHROPIC_FAMILIES),
}


@lru_cache(maxsize=4096)
def family_of(provider: str, model: str) -> str:
    """The family that serves `model` on `provider`; unknown models get the provider's default family."""
    name = model.lower().strip()
    name = name.removeprefix("ft:")  # fine-tuned models share their base model's family
    for pattern, family in _COMPILED[provider]:
        if pattern.search(name):
            return family
    return DEFAULT_FAMILY[provider]


def is_anthropic_model(model: str) -> bool:
    return model.lower().startswith("claude")


def known_families(provider: str) -> tuple[str, ...]:
    """Every family of `provider`, in table order, its catch-all family last: what the status page lists."""
    table = _OPENAI_FAMILIES if provider == "openai" else _ANTHROPIC_FAMILIES
    return (*dict.fromkeys(family for _, family in table), DEFAULT_FAMILY[provider])
