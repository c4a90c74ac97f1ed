"""Anthropic prompt caching, as the mock keeps it: a prefix marked with `cache_control` is written once, then read.

A request whose system, tools or messages carry a `cache_control` marker has
its prompt up to the last marked block cached: the first time that exact
prefix is seen it is written (`cache_creation_input_tokens`), afterwards it is
read (`cache_read_input_tokens`), and `input_tokens` counts only the rest, as
the real API reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exchange import encode_json

MAX_PREFIXES = 1024


class PromptCache:
    def __init__(self) -> None:
        self._seen: dict[bytes, None] = {}  # insertion-ordered: the oldest prefix is forgotten first

    def clear(self) -> None:
        self._seen.clear()

    def use(self, body: dict[str, Any], count: Callable[[dict[str, Any]], int]) -> tuple[int, int]:
        """(tokens written, tokens read) for this request; (0, 0) when nothing in it is marked."""
        prefix = _marked_prefix(body)
        if prefix is None:
            return 0, 0
        tokens = count(prefix)
        key = encode_json(prefix)
        if key in self._seen:
            return 0, tokens
        self._seen[key] = None
        if len(self._seen) > MAX_PREFIXES:
            del self._seen[next(iter(self._seen))]
        return tokens, 0


def _marked(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_marked(v) for v in value.values())
    if isinstance(value, list):
        return any(_marked(v) for v in value)
    return False


def _marked_prefix(body: dict[str, Any]) -> dict[str, Any] | None:
    """The model, tools, system and messages up to the last one holding a marker; None when none is marked."""
    found = body.get("messages")
    messages: list[Any] = found if isinstance(found, list) else []
    last = max((i for i, m in enumerate(messages) if _marked(m)), default=-1)
    if last < 0 and not _marked(body.get("system")) and not _marked(body.get("tools")):
        return None
    return {"model": body.get("model"), "tools": body.get("tools"), "system": body.get("system"),
            "messages": messages[: last + 1]}
