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

The settings are the list at first start; `PUT /admin/policy/prompt-filter`
(or the Policy page) replaces the phrases and the message in the store, one key,

    {prefix}policy:prompt_filter   STRING  JSON {"reject_phrases": [...], "reject_message": "..."}

and every process reads it every `REFRESH_SEC` in the background (one GET, as
the blocked lists do: both are a gateway/stored_policy.py `StoredPolicy`), so
the hot path never asks the store for it.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from gateway.errors import GatewayError
from gateway.stored_policy import StoredPolicy

log = logging.getLogger("poolgate.policy")

MATCH_TIMEOUT_SEC = 0.25  # per pattern and prompt: far above what an honest pattern takes on a 1 MB prompt
MAX_DELAY_SEC = 60.0
REMEMBER_SEC = 600.0
REFRESH_SEC = 1.0
MAX_PHRASES, MAX_PHRASE_CHARS, MAX_MESSAGE_CHARS = 500, 1000, 1000
_SCRIPT = (Path(__file__).parent / "prompt_rejections.lua").read_text()


class PhraseError(ValueError):
    pass


def parse_phrases(raw: str) -> list[regex.Pattern[str]]:
    """REJECT_PHRASES as compiled patterns; a PhraseError names an entry that is not a regular expression."""
    return compile_phrases(split_phrases(raw))


def split_phrases(raw: str) -> list[str]:
    """REJECT_PHRASES's entries: comma-separated, an entry in double quotes may hold commas."""
    if not raw.strip():
        return []
    entries = next(csv.reader([raw], skipinitialspace=True))
    return [entry for entry in (e.strip() for e in entries) if entry]


def compile_phrases(entries: list[str] | tuple[str, ...]) -> list[regex.Pattern[str]]:
    patterns = []
    for entry in entries:
        try:
            patterns.append(regex.compile(entry, regex.IGNORECASE | regex.VERSION0))
        except regex.error as error:
            raise PhraseError(f"{entry[:80]!r} is not a regular expression ({error})") from None
    return patterns


@dataclass(frozen=True, slots=True)
class PromptRules:
    """The phrases a prompt may not match, and what a refused caller is told."""

    reject_phrases: tuple[str, ...]
    reject_message: str

    @classmethod
    def from_json(cls, data: Any, default_message: str) -> PromptRules:
        """The rules from an admin's JSON object (a missing or empty message: REJECT_MESSAGE); ValueError (or
        PhraseError) says what is wrong."""
        if not isinstance(data, dict) or set(data) - {"reject_phrases", "reject_message"}:
            raise ValueError("expected a JSON object with reject_phrases (a list) and reject_message")
        phrases = data.get("reject_phrases", [])
        if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise ValueError("reject_phrases must be a list of non-empty regular expressions")
        if len(phrases) > MAX_PHRASES or any(len(p) > MAX_PHRASE_CHARS for p in phrases):
            raise ValueError(f"at most {MAX_PHRASES} phrases of at most {MAX_PHRASE_CHARS} characters")
        message = data.get("reject_message") or default_message
        if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
            raise ValueError(f"reject_message must be text of at most {MAX_MESSAGE_CHARS} characters")
        rules = cls(tuple(p.strip() for p in phrases), message)
        compile_phrases(rules.reject_phrases)  # every entry must be a regular expression
        return rules

    def as_json(self) -> dict[str, Any]:
        return {"reject_phrases": list(self.reject_phrases), "reject_message": self.reject_message}


def rejections_key(redis_prefix: str, identity: str) -> str:
    """The Redis key of an identity's refusals."""
    return f"{redis_prefix}policy:rejections:{identity}"


def rules_key(redis_prefix: str) -> str:
    """The Redis key of the rules an admin set."""
    return f"{redis_prefix}policy:prompt_filter"


def refusal_delay_sec(refusals: int) -> float:
    return min(2.0 ** (refusals - 1), MAX_DELAY_SEC)


class PromptFilter:
    """The rules in force in this process, kept in step with the store (`start`), and the refusals."""

    def __init__(self, phrases: str, message: str, store: Any, redis_prefix: str) -> None:
        self._defaults = PromptRules(tuple(split_phrases(phrases)), message)
        self._script = store.register_script(_SCRIPT)
        self._prefix = redis_prefix
        self._stored = StoredPolicy(
            store, rules_key(redis_prefix), default=self._defaults,
            parse=lambda data: PromptRules.from_json(data, self._defaults.reject_message),
            as_json=PromptRules.as_json, use=self._use, interval_sec=REFRESH_SEC, name="poolgate-prompt-filter",
            what="prompt filter's rules", log=log)

    @property
    def rules(self) -> PromptRules:
        return self._rules

    @property
    def default_message(self) -> str:
        return self._defaults.reject_message

    async def replace(self, rules: PromptRules) -> None:
        """Store new rules (every process picks them up) and use them here at once."""
        await self._stored.replace(rules)

    async def start(self) -> None:
        await self._stored.start()

    async def stop(self) -> None:
        await self._stored.stop()

    def _use(self, rules: PromptRules) -> None:
        self._patterns = compile_phrases(rules.reject_phrases)
        self._message = rules.reject_message
        self._rules = rules

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
        refusals = int(await self._script(keys=[rejections_key(self._prefix, identity)],
                                          args=[int(REMEMBER_SEC * 1000)]))
        await asyncio.sleep(refusal_delay_sec(refusals))
        return GatewayError("prompt_rejected", self._message)
