"""Scheduled quota refreshes (`QUOTA_REFRESH_PERIOD`): when every user's token quotas come back.

Two interchangeable ways, as for key checks, picked once at start-up:

- With Redis, `refresh_quotas` is an rq job: `poolgate worker`'s rq cron
  scheduler enqueues it on the deployment's accounts queue at each time the
  cron line names, and any worker runs it. Gateways do nothing.
- With the embedded store, `InProcessQuotaRefresh` sleeps in the gateway
  process until the next time the cron line names, then refreshes.

A refresh is per user one store script (`refresh_quota.lua`): each family's
`used` goes down by the user's refresh amount for it, or back to 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from accounts.schema import AccountsSchema
from accounts.users import UserBook
from keypool.jobs import run_with_store
from keypool.repeating import Repeating

log = logging.getLogger("poolgate.accounts")

JOB_TIMEOUT_SEC = 600


def accounts_queue_name(redis_prefix: str) -> str:
    """The rq queue of one deployment's accounts work (quota refreshes); deployments keep apart by prefix."""
    return f"{redis_prefix}accounts"


def refresh_quotas(redis_prefix: str) -> int:
    """rq job: refresh every user's quotas; how many users were refreshed (rq keeps it as the result)."""
    refreshed = run_with_store(  # the worker's store, named once for all its jobs (`keypool.jobs.use_store`)
        lambda store: UserBook(store, AccountsSchema(redis_prefix), ()).refresh_all_quotas(), "quota refresh jobs")
    log.info("refreshed the quotas of %d user(s)", refreshed)
    return refreshed


def next_refresh_at(cron_line: str, after: float) -> float:
    """The first time (unix seconds) after `after` that the cron line names, in the server's time zone."""
    from croniter import croniter

    return float(croniter(cron_line, datetime.fromtimestamp(after).astimezone()).get_next(float))


class InProcessQuotaRefresh:
    """The embedded store's refresh timer: one `Repeating` task in the gateway process.

    `clock` and `sleep` are the wall clock and asyncio's sleep; a test hands in its own to run a
    day of refreshes without waiting for one.
    """

    def __init__(
        self, book: UserBook, cron_line: str, *, clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._book = book
        self._cron = cron_line
        self._clock = clock
        self._due = 0.0  # set by start(): the next time the cron line names
        self._timer = Repeating(self._refresh_if_due, self._until_due, name="poolgate-quota-refresh",
                                failure="could not refresh user quotas", log=log, sleep=sleep)

    def start(self) -> None:
        self._due = next_refresh_at(self._cron, self._clock())
        self._timer.start()
        log.info("user quotas refresh at %r (in this process)", self._cron)

    async def stop(self) -> None:
        await self._timer.stop()

    def _until_due(self) -> float:
        return max(0.0, min(self._due - self._clock(), 60.0))  # a clock set forward or back is noticed within a minute

    async def _refresh_if_due(self) -> None:
        if self._clock() < self._due:
            return
        try:
            count = await self._book.refresh_all_quotas()
            log.info("refreshed the quotas of %d user(s)", count)
        finally:  # a refresh that failed (the store blipped) is not run again: the next scheduled one tries
            self._due = next_refresh_at(self._cron, max(self._clock(), self._due))
