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

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from keypool import ConfiguredKey, KeyPool

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
        self._watch: asyncio.Task[None] | None = None
        # Told the ids of the keys registered again, so they are checked as at start-up.
        self.on_registered_again: Callable[[list[str]], Awaitable[None]] | None = None

    async def register(self) -> None:
        await self._store.set(self._marker, "1")
        await self._pool.register_configured(self._keys)

    def start(self, every_sec: float = CHECK_EVERY_SEC) -> None:
        self._watch = asyncio.create_task(self._keep_registered(every_sec), name="poolgate-key-registration")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _keep_registered(self, every_sec: float) -> None:
        unreachable = False
        while True:
            await asyncio.sleep(every_sec)
            try:
                if await self._store.exists(self._marker):
                    unreachable = False
                    continue
                log.warning("the store has lost the configured keys (a Redis restarted without persistence?): "
                            "registering %d again", len(self._keys))
                await self.register()
                unreachable = False
                if self.on_registered_again is not None:
                    await self.on_registered_again([key.key_id for key in self._keys])
            except Exception as error:  # the watch must outlive any one failure; the type alone is logged
                if not unreachable:  # once per outage, not every few seconds
                    log.warning("cannot look for the configured keys in the store: %s", type(error).__name__)
                unreachable = True
