"""When key checks run, seen from a gateway process: at start-up, on request, on a schedule, after retirement.

Three interchangeable ways, picked once at start-up:

- `RqKeyChecks` (`REDIS_URL` set): checks are rq jobs. Any gateway process
  enqueues them; `poolgate worker` runs them, and its rq cron scheduler sweeps
  for due checks every minute (periodic checks and backoff rechecks).
- `InProcessKeyChecks` (embedded store): the same check functions run as
  asyncio tasks in this process, with a timer that sleeps until the next key
  is due (and wakes early when traffic retires a key).
- `KeyChecksOff` (`CHECK_KEYS=false`): nothing runs; keys stay as traffic
  and the operator leave them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from gateway.settings import Settings
from keypool.health import CheckPolicy, KeyHealth
from keypool.jobs import JOB_TIMEOUT_SEC, check_keys, queue_name

log = logging.getLogger("poolgate.key_checks")

_MAX_SLEEP_SEC = 60.0


def check_policy(settings: Settings) -> CheckPolicy:
    return CheckPolicy(
        redis_prefix=settings.redis_prefix,
        openai_base_url=settings.openai_base_url.rstrip("/"),
        anthropic_base_url=settings.anthropic_base_url.rstrip("/"),
        openai_interval_sec=settings.key_check_interval_openai_hours * 3600,
        anthropic_interval_sec=settings.key_check_interval_anthropic_hours * 3600,
        backoff_sec=tuple(float(step) for step in settings.key_recheck_backoff_sec),
        timeout_sec=settings.key_check_timeout_sec,
    )


class KeyChecksOff:
    """`CHECK_KEYS=false`: no check ever runs."""

    enabled = False

    async def start(self) -> None:
        log.info("key checks are off (CHECK_KEYS=false)")

    async def request(self, key_ids: list[str]) -> None:
        """Have these keys checked soon."""

    async def retired(self, key_id: str, status: str) -> None:
        """Traffic retired a key (the `KeyPool.on_retired` hook): schedule its recheck."""

    async def stop(self) -> None:
        pass


class InProcessKeyChecks(KeyChecksOff):
    enabled = True

    def __init__(self, health: KeyHealth) -> None:
        self._health = health
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Whether a check is running in this process (tests wait for it)."""
        return bool(self._tasks)

    async def start(self) -> None:
        await self.request(await self._health.inventory.key_ids())
        self._timer = asyncio.create_task(self._run_due_checks(), name="poolgate-key-checks")

    async def request(self, key_ids: list[str]) -> None:
        if key_ids:
            self._spawn(self._health.check_keys(key_ids))

    async def retired(self, key_id: str, status: str) -> None:
        if await self._health.schedule_recheck(key_id) is not None:
            self._wake.set()

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._timer] if self._timer else [])]:
            task.cancel()
        for task in [*self._tasks, *([self._timer] if self._timer else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._timer = None

    async def _run_due_checks(self) -> None:
        while True:
            self._wake.clear()  # before looking, so a retirement reported meanwhile still wakes the next wait
            try:
                due = await self._health.claim_due_keys()
                if due:
                    self._spawn(self._health.check_keys(due))
                wait = await self._health.seconds_until_next_due()
            except Exception as exc:  # the store may blip; try again shortly
                log.warning("could not look for due key checks: %s", type(exc).__name__)
                wait = 5.0
            with contextlib.suppress(TimeoutError):
                sleep = _MAX_SLEEP_SEC if wait is None else min(max(wait, 0.05), _MAX_SLEEP_SEC)
                await asyncio.wait_for(self._wake.wait(), sleep)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._check_done)

    def _check_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._wake.set()  # the check set the key's next check, maybe sooner than the timer is sleeping

    @staticmethod
    async def _quietly(work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception as exc:
            log.warning("key check failed: %s", type(exc).__name__)


class RqKeyChecks(KeyChecksOff):
    enabled = True

    def __init__(self, health: KeyHealth, redis_url: str) -> None:
        import redis
        from rq import Queue

        self._health = health
        self._sync_redis = redis.Redis.from_url(redis_url)
        self._queue = Queue(queue_name(health.policy.redis_prefix), connection=self._sync_redis)

    async def start(self) -> None:
        await self.request(await self._health.inventory.key_ids())
        workers = await asyncio.to_thread(self._count_workers)
        if workers == 0:
            log.warning("no `poolgate worker` is running: key checks wait in rq queue %s until one starts",
                        self._queue.name)

    async def request(self, key_ids: list[str]) -> None:
        if key_ids:
            # rq's client is synchronous; a thread keeps the event loop free.
            await asyncio.to_thread(
                self._queue.enqueue, check_keys, self._health.policy, key_ids,
                job_timeout=JOB_TIMEOUT_SEC, result_ttl=3600, failure_ttl=86400,
                description=f"check {len(key_ids)} key(s): {', '.join(key_ids[:5])}",
            )

    async def retired(self, key_id: str, status: str) -> None:
        # The worker's cron sweep picks the key up when its recheck is due.
        await self._health.schedule_recheck(key_id)

    async def stop(self) -> None:
        self._sync_redis.close()

    def _count_workers(self) -> int:
        from rq import Worker

        return int(Worker.count(queue=self._queue))


KeyChecks = KeyChecksOff | InProcessKeyChecks | RqKeyChecks


def build_key_checks(settings: Settings, store: Any) -> KeyChecks:
    if not settings.check_keys:
        return KeyChecksOff()
    health = KeyHealth(store, check_policy(settings))
    # rq's keys cannot share a cluster's hash tag, and rq's client does not follow a sentinel's failover.
    if settings.store_is_embedded or settings.redis_cluster or settings.redis_sentinels:
        return InProcessKeyChecks(health)
    return RqKeyChecks(health, settings.redis_url)
