"""Scheduled quota refreshes (QUOTA_REFRESH_PERIOD): rq cron work run by `poolgate worker`, or a timer when embedded.

Nobody waits for an hour here: the embedded timer runs on a fake clock, and the
rq schedule's due moment is reached by moving its next run time, then the real
`poolgate worker --burst` runs what rq's scheduler enqueued.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import fakeredis
import pytest
from checks_support import admin, run_burst_worker
from users_support import create_user, schema_of, set_fields, start_with_admin

from accounts.refresh import InProcessQuotaRefresh
from accounts.schema import AccountsSchema
from accounts.users import UserBook, UserChanges
from gateway.settings import ConfigError, Settings, refresh_cron
from gateway.worker import schedule_background_work


@pytest.mark.parametrize(
    ("period", "line"),
    [("hourly", "0 * * * *"), ("daily", "0 0 * * *"), ("DAILY", "0 0 * * *"),
     ("*/15 9-17 * * 1-5", "*/15 9-17 * * 1-5"), ("", None)],
)
def test_refresh_periods_are_cron_lines(period: str, line: str | None) -> None:
    assert refresh_cron(period) == line


@pytest.mark.parametrize("period", ["weekly", "0 0 * *", "61 * * * *", "every day"])
def test_a_refresh_period_that_is_no_schedule_stops_start_up(period: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"QUOTA_REFRESH_PERIOD": period}, env_file=None)
    assert any(problem.startswith(f"QUOTA_REFRESH_PERIOD={period!r}") for problem in caught.value.problems)


class FakeClock:
    """Wall time that moves only when the timer sleeps: a day of schedule in a few milliseconds."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_the_embedded_timer_refreshes_at_each_time_the_cron_line_names() -> None:
    store = fakeredis.FakeAsyncRedis()
    book = UserBook(store, AccountsSchema("refresh-test:"), ("gpt-4o",))
    user, _ = await book.create(UserChanges(set_fields={"refresh:gpt-4o": "300"}), {"gpt-4o": 1000})
    await store.hset(book.schema.user(user["id"]), "used:gpt-4o", 1000)  # as settlement counted it
    clock = FakeClock(datetime(2026, 12, 3, 12, 10, 0))
    refreshed_at: list[datetime] = []
    two_done = asyncio.Event()

    class WatchedBook(UserBook):
        async def refresh_all_quotas(self) -> int:
            refreshed_at.append(datetime.fromtimestamp(clock.time()))
            count = await super().refresh_all_quotas()
            if len(refreshed_at) == 2:
                two_done.set()
            return count

    timer = InProcessQuotaRefresh(
        WatchedBook(store, book.schema, book.families), "0 * * * *", clock=clock.time, sleep=clock.sleep
    )
    timer.start()
    await asyncio.wait_for(two_done.wait(), 10)
    await timer.stop()

    assert refreshed_at == [datetime(2026, 12, 3, 13, 0), datetime(2026, 12, 3, 14, 0)]
    assert max(clock.slept) <= 60, "a clock that jumps is noticed within a minute"
    assert (await book.get(user["id"]) or {})["quotas"]["gpt-4o"]["used"] == 400, "1000 - 300 - 300"


def test_an_embedded_gateway_runs_the_timer_and_a_redis_one_leaves_it_to_the_worker(
    start_gateway: Any, store_url: str
) -> None:
    gateway = start_with_admin(start_gateway, QUOTA_REFRESH_PERIOD="hourly")

    assert (gateway.app.quota_refresh is not None) == (store_url == "")


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_poolgate_worker_runs_the_refresh_that_rqs_cron_schedule_enqueues(start_gateway: Any) -> None:
    import redis
    from rq.cron import CronScheduler

    gateway = start_with_admin(start_gateway, QUOTA_REFRESH_PERIOD="daily")
    user, _ = create_user(gateway, quotas={"gpt-4o": 1000, "claude-opus": 50}, refresh={"gpt-4o": 250})
    set_fields(gateway, schema_of(gateway).user(user["id"]), **{"used:gpt-4o": 900, "used:claude-opus": 50})
    settings = gateway.app.settings
    connection = redis.Redis.from_url(settings.redis_url)
    scheduler = CronScheduler(connection=connection)
    schedule_background_work(scheduler, settings)
    [refresh] = [job for job in scheduler.get_jobs() if job.cron]

    not_yet = [job for job in scheduler.enqueue_jobs() if job.cron]  # the usage move (an interval job) aside
    assert refresh.cron == "0 0 * * *" and not_yet == []
    assert refresh.next_enqueue_time is not None
    refresh.next_enqueue_time -= timedelta(days=1)  # midnight has come
    due = [job for job in scheduler.enqueue_jobs() if job.cron]
    run_burst_worker(settings)

    assert due == [refresh]
    quotas = admin(gateway, "GET", f"/users/{user['id']}").json()["user"]["quotas"]
    assert (quotas["gpt-4o"]["used"], quotas["claude-opus"]["used"]) == (650, 0)
    connection.close()
