"""Queue quality under overload: K keys limited upstream to R requests a minute, twice their capacity offered.

Starts a redis-server, the fake upstream and a gateway on loopback, then U
identities offer 2 x K x R requests a minute for a fixed time and wait for
their answers. Reports: share of pool capacity used, upstream 429s,
client-visible errors, Jain's fairness index across identities, and the
estimated wait (read when each request arrives) against the wait it had.

Run by `python3 -m bench` (alone: `python3 -m bench --only queue`).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import httpx

from bench.services import Services


async def offer_load(gateway: str, stats_of: Any, identities: int, rate_per_sec: float, seconds: float,
                     family: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=2000)) as client:

        async def one(i: int) -> None:
            who = f"10.9.0.{i % identities}"
            estimate = (await stats_of()).get(family, {}).get("estimated_wait_sec", 0.0)
            started = time.monotonic()
            reply = await client.post(
                gateway + "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                headers={"x-forwarded-for": who},
            )
            results.append({
                "identity": who, "status": reply.status_code, "estimate_sec": estimate,
                "waited_sec": int(reply.headers.get("x-queue-wait-ms", "0")) / 1000,
                "latency_sec": time.monotonic() - started, "sent_at": started,
            })

        tasks = []
        begin = time.monotonic()
        n = 0
        while time.monotonic() - begin < seconds:
            tasks.append(asyncio.create_task(one(n)))
            n += 1
            await asyncio.sleep(max(0.0, begin + n / rate_per_sec - time.monotonic()))
        await asyncio.gather(*tasks)
    return results


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 1.0


def measure_queue_quality(*, keys: int, rpm: int, identities: int, seconds: float, overload: float = 2.0
                          ) -> dict[str, Any]:
    with Services() as services:
        redis = services.redis()
        upstream = services.mock_upstream()
        pool_keys = [f"sk-bench-rpm{rpm}-{i:04d}" for i in range(keys)]
        gateway = services.poolgate(redis, upstream, pool_keys, pinned=False, GATEKEEPER="none",
                                    USER_CONCURRENCY_LIMIT="1000", QUEUE_TIMEOUT_SEC="900", CHECK_KEYS="false")

        async def run() -> list[dict[str, Any]]:
            import redis.asyncio as aioredis

            from dispatch import Dispatcher
            from keypool import KeyPool, PoolSchema
            from queues.waiting import FamilyQueues

            store = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis.port}/0")
            dispatcher = Dispatcher(KeyPool(store, PoolSchema("poolgate:")), 60)
            queues = FamilyQueues(store, dispatcher, user_concurrency_limit=0, queue_timeout_sec=1,
                                  heartbeat_interval_sec=1, tokens_punishment_factor=0)
            try:
                return await offer_load(gateway.url, queues.stats, identities, overload * keys * rpm / 60,
                                        seconds, "gpt-4o-mini")
            finally:
                await store.aclose()

        results = asyncio.run(run())
        upstream_log = httpx.get(upstream.url + "/_mock/requests").json()

    chats = [r for r in upstream_log if r["path"] == "/v1/chat/completions"]
    window_start = min((r["started_at"] for r in chats), default=0.0)
    minutes = max(1, round(seconds / 60))
    in_window = [r for r in chats if r["status"] == 200 and r["started_at"] - window_start < minutes * 60]
    served_per_identity: dict[str, int] = {}
    for r in results:
        if r["status"] == 200:
            served_per_identity[r["identity"]] = served_per_identity.get(r["identity"], 0) + 1
    waited = [r for r in results if r["status"] == 200 and r["waited_sec"] >= 1.0]
    errors = [abs(r["estimate_sec"] - r["waited_sec"]) / r["waited_sec"] for r in waited]
    upstream_429s = sum(1 for r in chats if r["status"] == 429)
    return {
        "keys": keys, "rpm_per_key": rpm, "identities": identities, "seconds": seconds, "overload": overload,
        "offered": len(results),
        "capacity_used": round(len(in_window) / (keys * rpm * minutes), 3),
        "upstream_requests": len(chats),
        "upstream_429s": upstream_429s,
        "upstream_429_share": round(upstream_429s / max(len(chats), 1), 4),
        "client_errors": sum(1 for r in results if r["status"] != 200),
        "jain_index_served": round(jain(list(served_per_identity.values())), 3),
        "median_wait_sec": round(statistics.median(r["waited_sec"] for r in results), 2) if results else None,
        "max_wait_sec": round(max(r["waited_sec"] for r in results), 2) if results else None,
        "waits_estimated": len(errors),
        "median_estimate_error": round(statistics.median(errors), 3) if errors else None,
    }


def measure_concurrency_limited(*, keys: int, identities: int, seconds: float, overload: float = 2.0
                                ) -> dict[str, Any]:
    """Keys that take one request at a time (`bench/limited_upstream.py`), twice their capacity offered.

    Capacity is one request per key per upstream latency; a pool that sends every waiter to a key
    the moment it rests no more spends its capacity on 429s.
    """
    from bench.limited_upstream import LATENCY_SEC

    with Services() as services:
        redis = services.redis()
        upstream = services.start("limited-upstream", [
            sys.executable, "-m", "uvicorn", "bench.limited_upstream:app", "--host", "127.0.0.1", "--port", "{port}",
            "--no-access-log", "--log-level", "warning"], cpu=services.other_cpu, ready_path=None)
        pool_keys = [f"sk-bench-one-at-a-time-{i:04d}" for i in range(keys)]
        gateway = services.poolgate(redis, upstream, pool_keys, pinned=False, GATEKEEPER="none",
                                    USER_CONCURRENCY_LIMIT="1000", QUEUE_TIMEOUT_SEC="900", CHECK_KEYS="false",
                                    MAX_KEY_ATTEMPTS="50", UPSTREAM_RETRIES="0")

        async def no_stats() -> dict[str, Any]:
            return {}

        capacity_per_sec = keys / LATENCY_SEC
        began = time.time()
        results = asyncio.run(offer_load(gateway.url, no_stats, identities, overload * capacity_per_sec, seconds,
                                         "gpt-4o-mini"))
        upstream_stats = httpx.get(upstream.url + "/_stats").json()
    served_in_window = sum(1 for t in upstream_stats["served_at"] if t - began < seconds)
    served = len(upstream_stats["served_at"])
    return {
        "keys": keys, "concurrency_per_key": 1, "latency_sec": LATENCY_SEC, "identities": identities,
        "seconds": seconds, "overload": overload, "offered": len(results),
        "capacity_used": round(served_in_window / (capacity_per_sec * seconds), 3),
        "upstream_requests": served + upstream_stats["refused"],
        "upstream_429s": upstream_stats["refused"],
        "client_errors": sum(1 for r in results if r["status"] != 200),
        "median_wait_sec": round(statistics.median(r["waited_sec"] for r in results), 2) if results else None,
    }
