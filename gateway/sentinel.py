"""Redis Sentinel (`REDIS_SENTINELS`): ask the sentinels which server is the master, and ask again after a failover.

`REDIS_URL` still carries everything but the address (`redis://:password@mymaster/0`, scheme for TLS,
password, database); its host names the master as the sentinels know it (`sentinel monitor <name> ...`).
redis-py's sentinel pool looks the master up on every new connection, so when the sentinels promote a
replica, the connections to the old master fail, the next ones go to the new master, and the gateway
carries on within the sentinels' failover time. Scripts go through the same client (the hot path's own
link keeps one fixed address), and key checks run in the gateways, as on a cluster.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit


def sentinel_addresses(sentinels: tuple[str, ...]) -> list[tuple[str, int]]:
    addresses = []
    for entry in sentinels:
        host, _, port = entry.rpartition(":")
        addresses.append((host.strip("[]") or entry, int(port) if port.isdigit() else 26379))
    return addresses


def open_sentinel_store(redis_url: str, sentinels: tuple[str, ...], *, max_connections: int) -> Any:
    """The master's client, through the sentinels; same API as the single-Redis store."""
    from redis.asyncio.sentinel import Sentinel

    parts = urlsplit(redis_url)
    options: dict[str, Any] = {"decode_responses": False, "max_connections": max_connections,
                               "socket_connect_timeout": 5, "health_check_interval": 30}
    if parts.password:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.path.strip("/"):
        options["db"] = int(parts.path.strip("/"))
    if parts.scheme == "rediss":
        options["ssl"] = True
    sentinel = Sentinel(sentinel_addresses(sentinels), socket_timeout=5, sentinel_kwargs={"socket_timeout": 5})
    return sentinel.master_for(parts.hostname or "mymaster", **options)
