"""Pool size: a request must not cost more when the pool holds more keys.

For each size the pool is filled (the keys beyond the two configured ones are
added as an operator adds them, through `KeyInventory`, so they are filed as
lease candidates exactly as in production), a fresh poolgate (one worker,
pinned to the server core, key checks off so 20,000 start-up checks do not
run during the measurement) serves 16 connections for a while, and then the
status snapshot (`GET /status`) and the admin key list (`GET /admin/keys`),
both O(N) by nature, are timed.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.load import closed_loop, request_bytes
from bench.services import PROXY_KEY, Service, Services

ADMIN_KEY = "bench-admin-key"
Log = Callable[[str], None]


async def _fill(redis_url: str, prefix: str, count: int) -> None:
    """Add `count` plain keys to the pool under `prefix`, as the admin API would."""
    import redis.asyncio as redis

    from keypool.inventory import ADMIN_SOURCE, KeyInventory
    from keypool.keys import parse_keys
    from keypool.schema import PoolSchema

    store = redis.Redis.from_url(redis_url)
    inventory = KeyInventory(store, PoolSchema(prefix))
    keys = parse_keys("openai", [f"sk-bench-pool-{i:06d}" for i in range(count)])
    for start in range(0, len(keys), 1000):
        async with store.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                await inventory.update(
                    "openai", key.key_id, pipe=pipe,
                    set_fields={"provider": "openai", "secret": key.secret, "organization": "",
                                "source": ADMIN_SOURCE, "status": "active", "families": "*"},
                )
            await pipe.execute()
    await store.aclose()


def _timed_get(url: str, headers: dict[str, str], times: int = 3) -> tuple[float, int]:
    """Median milliseconds of `times` GETs of `url`, and the size of the answer."""
    spent, size = [], 0
    with httpx.Client(timeout=120) as client:
        for _ in range(times):
            began = time.perf_counter()
            reply = client.get(url, headers=headers)
            spent.append((time.perf_counter() - began) * 1000)
            reply.raise_for_status()
            size = len(reply.content)
    return round(statistics.median(spent), 1), size


def measure_pool_size(sizes: tuple[int, ...], seconds: float, services: Services, redis: Service,
                      pool_keys: list[str], body: bytes, log: Log) -> dict[str, Any]:
    upstream = services.mock_upstream()
    results: dict[str, Any] = {}
    for size in sizes:
        prefix = f"poolgate-bench-size-{size}:"
        extra = max(size - len(pool_keys), 0)
        log(f"pool size {size}: adding {extra} keys")
        asyncio.run(_fill(f"redis://127.0.0.1:{redis.port}/0", prefix, extra))
        gateway = services.poolgate(redis, upstream, pool_keys, REDIS_PREFIX=prefix, CHECK_KEYS="false",
                                    ADMIN_KEY=ADMIN_KEY)
        payload = request_bytes("127.0.0.1", gateway.port, "/v1/chat/completions", body,
                                {"authorization": f"Bearer {PROXY_KEY}"})
        log(f"pool size {size}: 16 connections for {seconds:g} s")
        run = asyncio.run(closed_loop("127.0.0.1", gateway.port, payload, in_flight=16, seconds=seconds,
                                      warmup_requests=5))
        status_ms, status_bytes = _timed_get(gateway.url + "/status", {})
        admin_ms, admin_bytes = _timed_get(gateway.url + "/admin/keys", {"authorization": f"Bearer {ADMIN_KEY}"})
        results[str(size)] = {
            "keys": size, "requests_per_sec": round(run.requests_per_sec, 1), "errors": run.errors,
            "first_error": run.first_error, "status_ms": status_ms, "status_bytes": status_bytes,
            "admin_keys_ms": admin_ms, "admin_keys_bytes": admin_bytes,
        }
        log(f"pool size {size}: {run.requests_per_sec:,.0f} requests/s; /status {status_ms} ms, "
            f"/admin/keys {admin_ms} ms")
        services.stop(gateway)
    services.stop(upstream)
    smallest, largest = str(sizes[0]), str(sizes[min(2, len(sizes) - 1)])
    base = results[smallest]["requests_per_sec"] or 1
    return {"sizes": results, "ratio": round(results[largest]["requests_per_sec"] / base, 3),
            "ratio_of": [int(smallest), int(largest)]}
