"""`poolgate worker`: the process that runs key checks when `REDIS_URL` is set.

It is an rq worker on the deployment's key-check queue, plus rq's cron
scheduler (in a child process, since it wants its own signal handling) which
enqueues a sweep for due checks every minute: periodic checks and the backoff
rechecks of keys that traffic retired. Gateways enqueue the immediate checks
(start-up, added keys, an operator's recheck). Any number of workers may run:
jobs are idempotent, and a key is probed once even when two checks meet.

`--burst` sweeps once, runs what is queued, and exits — for tests, or for a
deployment that prefers a system cron to a resident worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys

from gateway.key_checks import check_policy
from gateway.settings import Settings
from keypool.health import CheckPolicy
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
    if not settings.check_keys:
        print("poolgate: CHECK_KEYS=false, so there is nothing for a worker to do.", file=sys.stderr)
        return 0
    import redis
    from rq import Queue, Worker

    use_store(settings.redis_url)
    policy = check_policy(settings)
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(queue_name(settings.redis_prefix), connection=connection)
    worker = Worker([queue], connection=connection)
    level = settings.log_level.upper()
    if burst:
        queue.enqueue(sweep_due_checks, policy, job_timeout=JOB_TIMEOUT_SEC, description="sweep due key checks")
        worker.work(burst=True, logging_level=level)
        return 0
    cron = multiprocessing.get_context("spawn").Process(
        target=run_cron, args=(settings.redis_url, queue.name, policy, level), name="poolgate-cron", daemon=True
    )
    cron.start()
    try:
        worker.work(logging_level=level)
    finally:
        cron.terminate()
        cron.join(timeout=10)
    return 0


def run_cron(redis_url: str, queue: str, policy: CheckPolicy, level: str) -> None:
    """rq's cron scheduler: a sweep for due key checks every SWEEP_INTERVAL_SEC."""
    import redis
    from rq.cron import CronScheduler

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scheduler = CronScheduler(connection=redis.Redis.from_url(redis_url), logging_level=level)
    scheduler.register(
        sweep_due_checks, queue, args=(policy,), interval=SWEEP_INTERVAL_SEC, job_timeout=JOB_TIMEOUT_SEC,
        name=f"{queue}:sweep",
    )
    scheduler.start()
