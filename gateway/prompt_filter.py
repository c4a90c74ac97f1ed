"""Stage 4, validate (prompt filter): whether a prompt says something this proxy refuses to relay.

`REJECT_PHRASES` is a comma-separated list of case-insensitive regular
expressions (an entry in double quotes may hold commas), matched against the
prompt's text as `catalog.prompts` flattens it. Each match runs with a time
limit (`MATCH_TIMEOUT_SEC`, the `regex` package's timeout), so a pattern that
backtracks without end cannot stall the process: a pattern that runs out of
time is taken as no match, and said in the log.

A refused prompt gets 403 with `REJECT_MESSAGE`, after a delay that doubles
with each refusal of the same identity: 2^(n-1) s, at most 60 s (the OAI
Reverse Proxy's rule). The count lives in the store (`prompt_rejections.lua`),
so every process agrees on it, and is forgotten `REMEMBER_SEC` after the last
refusal.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from pathlib import Path
from typing import Any

import regex

from gateway.errors import GatewayError

log = logging.getLogger("poolgate.policy")

MATCH_TIMEOUT_SEC = 0.25  # per pattern and prompt: far above what an honest pattern takes on a 1 MB prompt
MAX_DELAY_SEC = 60.0
REMEMBER_SEC = 600.0
_SCRIPT = (Path(__file__).parent / "prompt_rejections.lua").read_text()


class PhraseError(ValueError):
    pass


def parse_phrases(raw: str) -> list[regex.Pattern[str]]:
    """REJECT_PHRASES as compiled patterns; a PhraseError names an entry that is not a regular expression."""
    if not raw.strip():
        return []
    entries = next(csv.reader([raw], skipinitialspace=True))
    patterns = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            patterns.append(regex.compile(entry, regex.IGNORECASE | regex.VERSION0))
        except regex.error as error:
            raise PhraseError(f"{entry!r} is not a regular expression ({error})") from None
    return patterns


def rejections_key(redis_prefix: str, identity: str) -> str:
    """The one Redis key the prompt filter writes."""
    return f"{redis_prefix}policy:rejections:{identity}"


def refusal_delay_sec(refusals: int) -> float:
    return min(2.0 ** (refusals - 1), MAX_DELAY_SEC)


class PromptFilter:
    def __init__(self, phrases: str, message: str, store: Any, redis_prefix: str) -> None:
        self._patterns = parse_phrases(phrases)
        self._message = message
        self._script = store.register_script(_SCRIPT) if self._patterns else None
        self._prefix = redis_prefix

    @property
    def active(self) -> bool:
        return bool(self._patterns)

    def matches(self, text: str) -> bool:
        """Whether any pattern matches `text` (CPU only: the caller decides whether a thread runs it)."""
        for pattern in self._patterns:
            try:
                if pattern.search(text, timeout=MATCH_TIMEOUT_SEC, concurrent=True):
                    return True
            except TimeoutError:
                log.warning("a REJECT_PHRASES pattern ran out of time (%.2f s) and was taken as no match: %r",
                            MATCH_TIMEOUT_SEC, pattern.pattern[:80])
        return False

    async def refuse(self, identity: str) -> GatewayError:
        """The 403 for a refused prompt, returned after this identity's delay has passed."""
        assert self._script is not None
        refusals = int(await self._script(keys=[rejections_key(self._prefix, identity)],
                                          args=[int(REMEMBER_SEC * 1000)]))
        await asyncio.sleep(refusal_delay_sec(refusals))
        return GatewayError("prompt_rejected", self._message)
