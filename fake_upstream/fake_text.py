"""Deterministic completion text and rough token counts for the mock upstream.

Tests predict what the mock says, and accounting code needs usage figures that
move the way real ones do (longer prompt, more tokens), so both are computed
from the request alone: one word is one token.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_WORDS = (
    "This is a reply from the poolgate mock upstream. It repeats the same words "
    "on every call, so tests can predict them, and it counts one token per word, "
    "so usage grows with the prompt the way real usage does."
).split()

# Keys whose values are text a model reads; ids, roles and types are not.
_TEXT_KEYS = frozenset({"text", "content", "input", "arguments", "output", "prompt"})


@lru_cache(maxsize=512)
def completion_tokens(count: int) -> tuple[str, ...]:
    """The first `count` tokens of the mock's reply; joined, they are its text."""
    return tuple(_WORDS[i % len(_WORDS)] if i == 0 else " " + _WORDS[i % len(_WORDS)] for i in range(count))


def completion_text(count: int) -> str:
    return "".join(completion_tokens(count))


def count_text_tokens(value: Any) -> int:
    """Words in the text found in `value`: a string, or content parts nested in lists and dicts."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_text_tokens(item) for item in value)
    if isinstance(value, dict):
        return sum(count_text_tokens(v) for k, v in value.items() if k in _TEXT_KEYS)
    return 0


def count_message_tokens(messages: Any, *, per_message: int, priming: int) -> int:
    """Prompt tokens of a message list: its words plus a fixed overhead per message.

    Both providers charge a few tokens per message for role markers, and a few
    for priming the reply; the overheads are theirs to choose.
    """
    if not isinstance(messages, list):
        return count_text_tokens(messages)
    return sum(count_text_tokens(m) + per_message for m in messages) + priming


def output_length(default: int, requested_max: Any) -> tuple[int, bool]:
    """How many tokens to generate, and whether the request's cap cut the reply short."""
    if isinstance(requested_max, int) and not isinstance(requested_max, bool) and requested_max < default:
        return max(requested_max, 0), True
    return default, False


def until_stop(pieces: tuple[str, ...], stops: list[str]) -> tuple[tuple[str, ...], str | None]:
    """The reply up to the first stop sequence in it (the sequence itself left out), and that sequence."""
    text = "".join(pieces)
    found = [(text.find(stop), stop) for stop in stops if stop and stop in text]
    if not found:
        return pieces, None
    at, stop = min(found)
    kept: list[str] = []
    length = 0
    for piece in pieces:  # whole tokens before the stop, then what of the next one precedes it
        if length + len(piece) > at:
            if at > length:
                kept.append(piece[: at - length])
            break
        kept.append(piece)
        length += len(piece)
    return tuple(kept), stop
