"""Stage 4, validate (caps): how much a request may ask of a model.

`MAX_OUTPUT_TOKENS_*` clamps the output a request asks for (`max_tokens`,
`max_completion_tokens`, `max_output_tokens`, whichever the endpoint reads),
and sets it when absent on Anthropic, which requires it. `MAX_CONTEXT_TOKENS_*`
caps prompt + requested output: a request over it gets 400
`context_length_exceeded` naming both numbers. The cap is never above the
model's own window (`catalog.windows`); with no proxy cap (0) the window alone
applies to OpenAI models, whose prompts are counted exactly, and nothing to
Claude's, whose count is an approximation upstream is better placed to judge.
A request that names no output size asks for nothing here beyond its prompt.

Who is exempt (`special` users) is the caller's decision: the caps are
simply not applied for them (gateway/policy.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from catalog.windows import context_window
from gateway.errors import ANTHROPIC, GatewayError

# Output-size fields per provider and endpoint, in the order the provider prefers them.
_OUTPUT_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("openai", "chat/completions"): ("max_completion_tokens", "max_tokens"),
    ("openai", "completions"): ("max_tokens",),
    ("openai", "responses"): ("max_output_tokens",),
    ("anthropic", "messages"): ("max_tokens",),
}


@dataclass(frozen=True, slots=True)
class Caps:
    max_context_tokens: int  # 0: no proxy cap
    max_output_tokens: int  # 0: no cap


def clamp_output(provider: str, endpoint: str, payload: dict[str, Any], caps: Caps) -> tuple[bool, int]:
    """The output cap applied to `payload`: whether it changed, and the output it now asks for (0: none named)."""
    fields = _OUTPUT_FIELDS.get((provider, endpoint))
    if fields is None:
        return False, 0
    changed = False
    requested = 0
    for name in fields:
        value = payload.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # 5000.0 must not slip past the cap
            if caps.max_output_tokens and value > caps.max_output_tokens:
                payload[name] = value = caps.max_output_tokens
                changed = True
            requested = max(requested, math.ceil(value) if value < 2**53 else 2**53)
    if provider == ANTHROPIC and caps.max_output_tokens and not any(n in payload for n in fields):
        payload[fields[0]] = requested = caps.max_output_tokens
        changed = True
    return changed, requested


def context_limit(provider: str, endpoint: str, model: str | None, caps: Caps) -> int | None:
    """The most prompt + output tokens a request may ask for, or None when the context is not checked here."""
    if (provider, endpoint) not in _OUTPUT_FIELDS:
        return None
    return _context_limit(provider, model, caps.max_context_tokens)


def check_context(provider: str, endpoint: str, model: str | None, prompt_tokens: int, requested: int,
                  caps: Caps) -> None:
    """A GatewayError (400 `context_length_exceeded`) when the prompt and the output asked for exceed the limit."""
    limit = context_limit(provider, endpoint, model, caps)
    if limit is not None and prompt_tokens + requested > limit:
        asked = f"{prompt_tokens} prompt tokens + {requested} output tokens = {prompt_tokens + requested}" \
            if requested else f"{prompt_tokens} prompt tokens"
        raise GatewayError(
            "context_length_exceeded",
            f"This request is too long: {asked}, over the limit of {limit} tokens "
            f"{'this proxy allows' if limit == caps.max_context_tokens else 'of ' + repr(model)}. "
            "Shorten the prompt or ask for less output.",
        )


def _context_limit(provider: str, model: str | None, proxy_cap: int) -> int | None:
    window = context_window(model) if model else None
    if proxy_cap:
        return min(proxy_cap, window) if window else proxy_cap
    return window if provider != ANTHROPIC else None
