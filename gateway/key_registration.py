"""Configured keys in the store: registered at start-up, and again whenever the store comes back empty.

The keys in `OPENAI_KEY` / `ANTHROPIC_KEY` live in the environment; the store
holds them only because a gateway registered them. A Redis that restarts
without persistence (or is flushed, or fails over to an empty replica) comes
back with nothing, and every request would answer 503 `no_key_available` until
someone restarted the gateways. So each registration also writes a marker,

    {prefix}registered   STRING  present while the store holds this deployment's configured keys

and every gateway process looks for it every `CHECK_EVERY_SEC` (one `EXISTS`,
in the background, never on the hot path). When it is gone, that process
registers the configured keys again and asks for them to be checked, as at
start-up. Several processes may notice at once: registration is idempotent.

The marker is written *before* the keys. Had the store restarted between the
two writes, the marker would be lost with it and the next look registers again;
written after, it could land alone in a fresh, empty store and hide the loss.
Keys added through the admin API are not in the configuration and cannot come
back this way; with an empty store they are gone, as is the usage history.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from keypool import ConfiguredKey, KeyPool
from keypool.repeating import Repeating

log = logging.getLogger("poolgate")

# How often each process looks for the marker: requests fail with no_key_available for at most about this long.
CHECK_EVERY_SEC = 2.0


def registered_marker(redis_prefix: str) -> str:
    return f"{redis_prefix}registered"


class KeyRegistration:
    """Keeps the configured keys in the store for as long as this process runs."""

    def __init__(self, store: Any, pool: KeyPool, keys: list[ConfiguredKey], redis_prefix: str) -> None:
        self._store = store
        self._pool = pool
        self._keys = keys
        self._marker = registered_marker(redis_prefix)
        # A failed look (the store away) is logged once per outage, not every few seconds.
        self._watch = Repeating(self._register_if_lost, CHECK_EVERY_SEC, name="poolgate-key-registration",
                                failure="cannot look for the configured keys in the store", log=log)
        # Told the ids of the keys registered again, so they are checked as at start-up.
        self.on_registered_again: Callable[[list[str]], Awaitable[None]] | None = None

    async def register(self) -> None:
        await self._store.set(self._marker, "1")
        await self._pool.register_configured(self._keys)

    def start(self) -> None:
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    async def _register_if_lost(self) -> None:
        """One look: the marker is there (nothing to do), or the store was emptied and the keys go back in."""
        if await self._store.exists(self._marker):
            return
        log.warning("the store has lost the configured keys (a Redis restarted without persistence?): "
                    "registering %d again", len(self._keys))
        await self.register()
        if self.on_registered_again is not None:
            await self.on_registered_again([key.key_id for key in self._keys])
