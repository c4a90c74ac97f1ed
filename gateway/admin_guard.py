"""Who may try the admin key: failed attempts per address, checked and counted in one store step.

A wrong guess is counted and judged against `ADMIN_LOCKOUT_FAILURES` by one
Lua script (`admin_guard.lua`), so a burst of concurrent guesses cannot all be
checked against the count as it stood before any of them. The address is the
client as uvicorn sees it: X-Forwarded-For only counts from a trusted proxy
(`FORWARDED_ALLOW_IPS`), so nobody can put their failures on someone else.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCRIPT = (Path(__file__).parent / "admin_guard.lua").read_text()

# Store calls the guard makes at once in one process. A flood of guesses waits here instead of taking
# every connection of the store's pool, which proxied requests need too.
MAX_CONCURRENT_JUDGEMENTS = 32


def failures_key(redis_prefix: str, address: str) -> str:
    """The one Redis key the admin API writes: failed attempts from an address, expiring with the lockout."""
    return f"{redis_prefix}admin:failures:{address}"


@dataclass(frozen=True, slots=True)
class Verdict:
    locked: bool
    failures: int  # so far, this attempt included when it was wrong
    retry_after_sec: int  # while locked: how long until the lockout ends


class AdminGuard:
    """The lockout of one store; `for_store` hands every request of a process the same one."""

    _by_store: weakref.WeakKeyDictionary[Any, AdminGuard] = weakref.WeakKeyDictionary()

    def __init__(self, store: Any) -> None:
        self._script = store.register_script(_SCRIPT)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_JUDGEMENTS)

    @classmethod
    def for_store(cls, store: Any) -> AdminGuard:
        guard = cls._by_store.get(store)
        if guard is None:
            guard = cls._by_store[store] = cls(store)
        return guard

    async def judge(
        self, redis_prefix: str, address: str, *, wrong: bool, max_failures: int, lockout_sec: float
    ) -> Verdict:
        """Whether `address` is locked out, after counting this attempt if its key was `wrong`."""
        async with self._slots:
            locked, failures, wait_ms = await self._script(
                keys=[failures_key(redis_prefix, address)],
                args=[max_failures, int(lockout_sec * 1000), 1 if wrong else 0],
            )
        return Verdict(bool(locked), int(failures), max(int(wait_ms), 1000) // 1000)
