"""`poolgate worker`: the process that runs background work when `REDIS_URL` is set.

It is an rq worker on the deployment's key-check and accounts queues, plus
rq's cron scheduler (in a child process, since it wants its own signal
handling) which enqueues a sweep for due checks every minute (periodic checks
and the backoff rechecks of keys that traffic retired) and, with
`QUOTA_REFRESH_PERIOD` set, a refresh of every user's quotas at the times it
names, and a move of the usage events into the usage database every
`MOVE_INTERVAL_SEC` (accounts/usage_mover.py). Gateways enqueue the immediate checks (start-up, added keys, an
operator's recheck). Any number of workers may run: jobs are idempotent, and a
key is probed once even when two checks meet.

`--burst` sweeps once, runs what is queued, and exits — for tests, or for a
deployment that prefers a system cron to a resident worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from typing import Any

from accounts import refresh as quota_refresh
from accounts import usage_mover
from gateway.key_checks import check_policy
from gateway.settings import Settings, refresh_cron
from keypool.jobs import JOB_TIMEOUT_SEC, SWEEP_INTERVAL_SEC, queue_name, sweep_due_checks, use_store

log = logging.getLogger("poolgate.worker")


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    if settings.store_is_embedded:
        print(
            "poolgate: `poolgate worker` needs REDIS_URL: with the embedded store, `poolgate serve` checks keys "
            "itself, in its own process.",
            file=sys.stderr,
        )
        return 2
    # Usage events always want moving (accounts/usage_mover.py), so a worker always has work.
    import redis
    from rq import Queue, Worker

    use_store(settings.redis_url)  # for every job this worker runs: key checks and quota refreshes
    # The usage database, named here and not in the job's arguments: rq logs those, and the URL holds a password.
    usage_mover.use_database(settings.usage_db_path, settings.usage_database_url, settings.usage_retention_days)
    policy = check_policy(settings) if settings.check_keys else None
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(queue_name(settings.redis_prefix), connection=connection)
    accounts_queue = Queue(quota_refresh.accounts_queue_name(settings.redis_prefix), connection=connection)
    worker = Worker([queue, accounts_queue], connection=connection)
    level = settings.log_level.upper()
    if burst:
        if policy is not None:
            queue.enqueue(sweep_due_checks, policy, job_timeout=JOB_TIMEOUT_SEC, description="sweep due key checks")
        accounts_queue.enqueue(usage_mover.move_usage, settings.redis_prefix, description="move usage events")
        worker.work(burst=True, logging_level=level)
        return 0
    cron = multiprocessing.get_context("spawn").Process(
        target=run_cron, args=(settings, level), name="poolgate-cron", daemon=True
    )
    cron.start()
    try:
        worker.work(logging_level=level)
    finally:
        cron.terminate()
        cron.join(timeout=10)
    return 0


def run_cron(settings: Settings, level: str) -> None:
    """rq's cron scheduler, with the deployment's background schedule (`schedule_background_work`)."""
    import redis
    from rq.cron import CronScheduler

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scheduler = CronScheduler(connection=redis.Redis.from_url(settings.redis_url), logging_level=level)
    schedule_background_work(scheduler, settings)
    scheduler.start()


def schedule_background_work(scheduler: Any, settings: Settings) -> None:
    """Register on an rq cron scheduler: the sweep for due key checks every SWEEP_INTERVAL_SEC (CHECK_KEYS), and
    the users' quota refresh at the times QUOTA_REFRESH_PERIOD names, the usage events' move every
    MOVE_INTERVAL_SEC."""
    accounts = quota_refresh.accounts_queue_name(settings.redis_prefix)
    scheduler.register(
        usage_mover.move_usage, accounts, args=(settings.redis_prefix,), interval=usage_mover.MOVE_INTERVAL_SEC,
        job_timeout=quota_refresh.JOB_TIMEOUT_SEC, name=f"{accounts}:move-usage",
    )
    if settings.check_keys:
        queue = queue_name(settings.redis_prefix)
        scheduler.register(
            sweep_due_checks, queue, args=(check_policy(settings),), interval=SWEEP_INTERVAL_SEC,
            job_timeout=JOB_TIMEOUT_SEC, name=f"{queue}:sweep",
        )
    cron_line = refresh_cron(settings.quota_refresh_period)
    if cron_line:
        queue = quota_refresh.accounts_queue_name(settings.redis_prefix)
        scheduler.register(
            quota_refresh.refresh_quotas, queue, args=(settings.redis_prefix,), cron=cron_line,
            job_timeout=quota_refresh.JOB_TIMEOUT_SEC, name=f"{queue}:refresh-quotas",
        )
