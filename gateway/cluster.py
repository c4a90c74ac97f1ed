"""Redis Cluster (`REDIS_CLUSTER=true`): find the one node that holds all of poolgate's keys.

With REDIS_CLUSTER the prefix carries a hash tag (`{poolgate}:`, see gateway/settings.py), so every
key poolgate writes, and every key a Lua script reaches (including the ones a script picks itself,
like the key it leases), hashes to one slot, served by one master. poolgate talks to that master
directly, with the same clients, pipelines, scripts and pub/sub as on a single Redis: no request
pays for cluster routing. The node is looked up at start-up; when the slot moves (a failover, a
resharding) the store answers MOVED, `/health` turns 503, and a restarted gateway finds the new
master. Key checks run inside the gateways (rq keeps its own keys outside the hash tag, so
`poolgate worker` cannot share a cluster).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


async def slot_owner_url(redis_url: str, prefix: str) -> str:
    """REDIS_URL, pointed at the master that serves the slot of `prefix` (credentials and TLS kept)."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=10, socket_timeout=10)
    try:
        slot = int(await client.execute_command("CLUSTER", "KEYSLOT", prefix))
        ranges = await client.execute_command("CLUSTER", "SLOTS")
    finally:
        await client.aclose()
    parts = urlsplit(redis_url)
    for start, end, master, *_ in ranges:
        if int(start) <= slot <= int(end):
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            host = host or (parts.hostname or "127.0.0.1")  # "" or "?" when the node does not know its address
            if host == "?":
                host = parts.hostname or "127.0.0.1"
            userinfo = parts.netloc.rpartition("@")[0]
            netloc = f"{userinfo}@{host}:{int(master[1])}" if userinfo else f"{host}:{int(master[1])}"
            return urlunsplit((parts.scheme, netloc, "", parts.query, ""))
    raise ConnectionError(f"no node of the cluster serves slot {slot} (is the cluster's state ok?)")
