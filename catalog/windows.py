"""How many tokens a model can read and write at once (its context window), by name pattern.

From the providers' model pages. A model not in the table has no known window:
only the proxy's own cap (MAX_CONTEXT_TOKENS_*) applies to it.
"""

from __future__ import annotations

import re
from functools import lru_cache

# First match wins: more specific patterns first.
_WINDOWS: tuple[tuple[str, int], ...] = (
    (r"^gpt-4\.1", 1_047_576),
    (r"^gpt-5", 400_000),
    (r"^(gpt-4o|chatgpt-4o)", 128_000),
    (r"^gpt-4-(turbo|\d{4}-preview|vision)|^gpt-4-1106|^gpt-4-0125", 128_000),
    (r"^gpt-4-32k", 32_768),
    (r"^gpt-4(-|$)", 8_192),
    (r"^gpt-3\.5-turbo-instruct", 4_096),
    (r"^gpt-3\.5-turbo", 16_385),
    (r"^o1-mini", 128_000),
    (r"^o1-preview", 128_000),
    (r"^o\d", 200_000),
    (r"^claude", 200_000),
)
_COMPILED = tuple((re.compile(pattern), window) for pattern, window in _WINDOWS)


@lru_cache(maxsize=4096)
def context_window(model: str) -> int | None:
    """Tokens (prompt + output) `model` accepts, or None when poolgate does not know."""
    name = model.lower().strip().removeprefix("ft:")
    for pattern, window in _COMPILED:
        if pattern.search(name):
            return window
    return None
