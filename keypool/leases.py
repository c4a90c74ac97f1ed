"""Keeping leases alive while their requests run.

A lease expires unless renewed, so a crashed process cannot hold key capacity
for ever. Every live lease of this process is renewed in one command, a few
times per TTL, by one background task: a request costs nothing extra for it.
The new expiry is taken from the store's clock (`renew.lua`), the one every
process reaps by, so a gateway whose own clock is off neither reaps nor
keeps alive anyone else's.
"""

from __future__ import annotations

import logging
from typing import Any

from keypool.repeating import Repeating
from keypool.scripts import script_source

log = logging.getLogger("poolgate.keypool")


class LeaseKeeper:
    def __init__(self, redis: Any, leases_key: str, ttl_sec: float) -> None:
        self._redis = redis
        self._leases_key = leases_key
        self._ttl_ms = int(ttl_sec * 1000)
        self._live: set[str] = set()
        self._renewing = Repeating(self.renew_now, max(ttl_sec / 3, 0.05), name="poolgate-lease-keeper",
                                   failure="could not renew key leases", log=log)
        self._renew = redis.register_script(script_source("renew.lua"))

    def hold(self, lease_id: str) -> None:
        self._live.add(lease_id)

    def drop(self, lease_id: str) -> None:
        self._live.discard(lease_id)

    def start(self) -> None:
        self._renewing.start()

    async def stop(self) -> None:
        await self._renewing.stop()

    async def renew_now(self) -> None:
        if not self._live:
            return
        await self._renew(keys=[self._leases_key], args=[self._ttl_ms, *self._live])
