"""The shared store: Redis when `REDIS_URL` is set, else an embedded in-process one.

Both speak the same `redis.asyncio` API, Lua included, so every caller has one
code path; the embedded store only limits poolgate to a single process.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("poolgate")


def open_store(redis_url: str) -> Any:
    if redis_url:
        import redis.asyncio as redis

        return redis.Redis.from_url(redis_url, decode_responses=False, health_check_interval=30)
    import fakeredis

    log.info("REDIS_URL is unset: state is kept in memory, for this single process only")
    return fakeredis.FakeAsyncRedis(decode_responses=False)
