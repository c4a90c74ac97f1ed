"""Redis Cluster (`REDIS_CLUSTER=true`): talk to the one node that holds all of poolgate's keys, wherever it is.

With REDIS_CLUSTER the prefix carries a hash tag (`{poolgate}:`, see gateway/settings.py), so every
key poolgate writes, and every key a Lua script reaches (including the ones a script picks itself,
like the key it leases), hashes to one slot, served by one master. poolgate talks to that master
directly, with the same client, pipelines, scripts and pub/sub as on a single Redis: no request pays
for cluster routing. Which node that is, is asked for each new connection (`CLUSTER SLOTS`, of any
node known so far), so when a replica takes over after a failover, the connections to the dead
master fail and the next ones go to the new one, as behind Redis Sentinel. Key checks run in the
gateways (rq keeps its own keys outside the hash tag, so `poolgate worker` cannot share a cluster).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError


class _SlotMaster:
    """Mixed into redis-py's connection: it connects to whichever node serves the pool's slot right now."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slot_pool: SlotMasterPool = kwargs.pop("slot_pool")
        super().__init__(*args, **kwargs)

    async def connect(self) -> None:
        if self.is_connected:  # type: ignore[attr-defined]
            return
        self.host, self.port = await self.slot_pool.slot_master()
        await self.connect_check_health(check_health=True, retry_socket_connect=False)  # type: ignore[attr-defined]


class _PlainSlotMaster(_SlotMaster, Connection):
    pass


class _TlsSlotMaster(_SlotMaster, SSLConnection):
    pass


class SlotMasterPool(BlockingConnectionPool):
    """REDIS_URL's connection pool (credentials, database, TLS), its connections aimed at the master of
    `prefix`'s slot."""

    def __init__(self, redis_url: str, prefix: str, **options: Any) -> None:
        parts = urlsplit(redis_url)
        kwargs = dict(BlockingConnectionPool.from_url(redis_url).connection_kwargs)
        kwargs.pop("host", None)
        kwargs.pop("port", None)
        tls = parts.scheme == "rediss"
        super().__init__(connection_class=_TlsSlotMaster if tls else _PlainSlotMaster, **kwargs, **options)
        self.connection_kwargs["slot_pool"] = self
        self._url = parts
        self._prefix = prefix
        self._nodes: list[tuple[str, int]] = [(parts.hostname or "127.0.0.1", parts.port or 6379)]

    async def slot_master(self) -> tuple[str, int]:
        """(host, port) of the master serving the prefix's slot, asked of each node known until one answers."""
        problem: Exception | None = None
        for host, port in list(self._nodes):
            node = Redis.from_url(self._url_of(host, port), socket_connect_timeout=5, socket_timeout=5)
            try:
                slot = int(await node.execute_command("CLUSTER", "KEYSLOT", self._prefix))
                ranges = await node.execute_command("CLUSTER", "SLOTS")
            except (RedisError, OSError) as error:
                problem = error
                continue
            finally:
                await node.aclose()
            found = None
            for start, end, *nodes in ranges:
                for address in nodes:
                    learned = (_text(address[0]) or host, int(address[1]))
                    if learned not in self._nodes:
                        self._nodes.append(learned)  # asked in turn if this one stops answering
                if int(start) <= slot <= int(end):
                    found = (_text(nodes[0][0]) or host, int(nodes[0][1]))
            if found is not None:
                return found
        raise RedisConnectionError(f"no node of the cluster names a master for poolgate's slot "
                                   f"({type(problem).__name__ if problem else 'slot not served'})")

    def _url_of(self, host: str, port: int) -> str:
        userinfo = self._url.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urlunsplit((self._url.scheme, netloc, "", self._url.query, ""))


def open_cluster_store(redis_url: str, prefix: str, *, max_connections: int, wait_sec: float) -> Any:
    pool = SlotMasterPool(redis_url, prefix, max_connections=max_connections, timeout=wait_sec,
                          decode_responses=False, health_check_interval=30)
    return Redis.from_pool(pool)


def _text(value: Any) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)
    return "" if text == "?" else text
