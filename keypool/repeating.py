"""A step repeated in the background: key leases renewed, cost reservations renewed, usage moved, lists re-read,
configured keys registered again in an emptied store.

Each of those is the same small machine: a task that sleeps, runs one step, and
goes on whatever the step raised (the store or a database may blip; the next
round tries again), started once and stopped by cancelling it. A failure is
logged once, and again only after a step has succeeded, so a store that stays
away for an hour writes one warning per outage rather than one per round.

The wait between steps is a fixed interval, or a callable asked before each
wait, for a step timed by a schedule (the embedded store's quota refresh,
accounts/refresh.py, waits until the next time its cron line names).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any


class Repeating:
    """`step` every `interval_sec` in its own task named `name`, from `start()` until `stop()`.

    `interval_sec` may be a callable: the seconds to wait before the next step, asked each time. `sleep` is
    asyncio's; a test hands in its own to run a day of steps without waiting for one.
    """

    def __init__(
        self, step: Callable[[], Awaitable[Any]], interval_sec: float | Callable[[], float], *, name: str,
        failure: str, log: logging.Logger, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._step = step
        self._interval = interval_sec if callable(interval_sec) else lambda: interval_sec
        self._sleep = sleep
        self._name = name
        self._failure = failure  # what the warning says went wrong, e.g. "could not renew key leases"
        self._log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._repeat(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _repeat(self) -> None:
        failing = False
        while True:
            await self._sleep(self._interval())
            try:
                await self._step()
                failing = False
            except Exception as error:
                if not failing:
                    self._log.warning("%s: %s", self._failure, type(error).__name__)
                failing = True
