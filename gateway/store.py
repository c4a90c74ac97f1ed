"""The shared store: Redis when `REDIS_URL` is set, else an embedded in-process one.

Both speak the same `redis.asyncio` API, Lua included, so every caller has one
code path; the embedded store only limits poolgate to a single process.

Both clients draw connections from a *blocking* pool of `MAX_CONNECTIONS`: a
call that finds every connection busy waits up to `CONNECTION_WAIT_SEC` for
one to come back. redis-py's default pool raises at once instead ("Too many
connections"), so a burst of a few hundred simultaneous requests turned into
503 `store_unavailable` and plain 500s from the admin API. The bound stays, so
a burst cannot open thousands of sockets to Redis; the hot path's two scripts
do not use this pool at all (gateway/script_link.py), only everything else does
(queues, the admin API, the status page, the lease keeper).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import BlockingConnectionPool

log = logging.getLogger("poolgate")

# Per process. Enough for the background work and the admin API with room to spare; a busy store makes
# callers queue for a connection rather than open more sockets.
MAX_CONNECTIONS = 100
# A caller still without a connection after this long fails with redis' ConnectionError (503 store_unavailable):
# by then Redis is stuck, not busy. The embedded store runs every Lua call on the event loop, so 1,000 requests
# arriving at once are worked off in about 20 s on a 2-core machine (tests/test_bursts.py); 20 s here refused
# the last hundred of them, so the bound leaves room for three times that.
CONNECTION_WAIT_SEC = 60.0


class _WaitingPool(BlockingConnectionPool):
    """The blocking pool with poolgate's wait; fakeredis builds its pool from a class and the connection's arguments."""

    def __init__(self, **connection_kwargs: Any) -> None:
        super().__init__(timeout=CONNECTION_WAIT_SEC, **connection_kwargs)


def open_store(redis_url: str, *, sentinels: tuple[str, ...] = (), cluster_prefix: str = "") -> Any:
    """The store's client: the embedded one, Redis at REDIS_URL, the sentinels' master (`sentinels`), or the
    master of a cluster that serves `cluster_prefix`'s slot (gateway/cluster.py)."""
    if redis_url and cluster_prefix:
        from gateway.cluster import open_cluster_store

        return open_cluster_store(redis_url, cluster_prefix, max_connections=MAX_CONNECTIONS,
                                  wait_sec=CONNECTION_WAIT_SEC)
    if redis_url and sentinels:  # the master as the sentinels name it, looked up again after a failover
        from gateway.sentinel import open_sentinel_store

        return open_sentinel_store(redis_url, sentinels, max_connections=MAX_CONNECTIONS)
    if redis_url:
        import redis.asyncio as redis

        pool = BlockingConnectionPool.from_url(
            redis_url, decode_responses=False, health_check_interval=30, max_connections=MAX_CONNECTIONS,
            timeout=CONNECTION_WAIT_SEC,
        )
        return redis.Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool
    import fakeredis

    log.info("REDIS_URL is unset: state is kept in memory, for this single process only")
    return fakeredis.FakeAsyncRedis(
        decode_responses=False, connection_pool_class=_WaitingPool, max_connections=MAX_CONNECTIONS
    )
