"""The rq jobs that check keys: plain functions with plain arguments, enqueued by name.

A job carries a `CheckPolicy` (base URLs, intervals, backoff, prefix — no
secrets) and key ids, never a key: rq stores job arguments in Redis and its
worker logs them. The store a job works on is the worker's own, set once when
`poolgate worker` starts (`use_store`), like rq's own connection.

    check_keys(policy, key_ids)   check these keys now (start-up, added, retired, operator's recheck)
    sweep_due_checks(policy)      check every key whose next check is due (rq's cron runs it every minute)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from keypool.health import CheckPolicy, KeyHealth

SWEEP_INTERVAL_SEC = 60
JOB_TIMEOUT_SEC = 600
T = TypeVar("T")

_store_url: str | None = None


def queue_name(redis_prefix: str) -> str:
    """The rq queue of one poolgate deployment: deployments sharing a Redis keep apart by prefix."""
    return f"{redis_prefix}key-checks"


def use_store(redis_url: str) -> None:
    """Tell the jobs of this worker process which Redis holds the pool (and the users: `run_with_store`)."""
    global _store_url
    _store_url = redis_url


def check_keys(policy: CheckPolicy, key_ids: list[str]) -> list[dict[str, Any]]:
    """Check these keys now; what each check found (no secrets), which rq keeps as the job's result."""
    return _run(policy, lambda health: health.check_keys(key_ids))


def sweep_due_checks(policy: CheckPolicy) -> list[dict[str, Any]]:
    """Check every key that is due: periodic checks, and rechecks of keys traffic retired."""

    async def sweep(health: KeyHealth) -> list[dict[str, Any]]:
        return await health.check_keys(await health.claim_due_keys())

    return _run(policy, sweep)


def _run(policy: CheckPolicy, work: Callable[[KeyHealth], Awaitable[T]]) -> T:
    return run_with_store(lambda store: work(KeyHealth(store, policy)), "key-check jobs")


def run_with_store(work: Callable[[Any], Awaitable[T]], jobs: str) -> T:
    """Run one job's `work` on its own connection to the store `use_store` named, closed when it ends."""
    if _store_url is None:
        raise RuntimeError(f"{jobs} run in `poolgate worker`, which says where the store is")
    url = _store_url

    async def main() -> T:
        import redis.asyncio as redis

        store = redis.Redis.from_url(url, decode_responses=False)
        try:
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(main())
