"""Moving usage events from the store's stream into the usage database, losing none.

Settlement appends one event per request to `{prefix}usage_events` (a Redis
stream) in the same script that returns the key. The mover reads them as the
consumer group "movers", writes them to the database (`accounts.usage_store`)
and only then acknowledges and deletes them. A mover killed at any point loses
nothing: what it read but did not acknowledge stays pending, and the next
mover reads the pending entries first (all movers are one consumer, "mover",
so no idle timeout has to pass); what it wrote but did not acknowledge is
written again and kept once (the row's key is the event's stream id).

Where it runs: with Redis, `poolgate worker` runs `move_usage` as an rq job
every MOVE_INTERVAL_SEC (gateway/worker.py); with the embedded store, a task
in the gateway process (`UsageLedger.start`). `GET /usage` also moves what
is waiting before it reads, so the report is current either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import ResponseError

from accounts.schema import AccountsSchema
from accounts.usage_store import COLUMNS, ReportQuery, UsageDatabase, open_usage_database
from keypool.repeating import Repeating

log = logging.getLogger("poolgate.accounts")

GROUP = "movers"
CONSUMER = "mover"  # one consumer for every mover: a new mover reads what a dead one left pending at once
BATCH = 500
MOVE_INTERVAL_SEC = 10
_DAY_MS = 86_400_000


async def move_usage_events(
    store: Any, events_key: str, db: UsageDatabase, *, retention_days: int = 0, batch: int = BATCH,
) -> int:
    """Move every waiting event into `db` (pending ones first); how many were moved."""
    try:
        await store.xgroup_create(events_key, GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
    moved = 0
    for start in ("0", ">"):  # "0": read before but never acknowledged (a mover died); ">": new
        while True:
            reply = await store.xreadgroup(GROUP, CONSUMER, {events_key: start}, count=batch)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            # An entry trimmed from the stream while pending (MAXLEN, a mover down for long) has no fields left.
            rows = [_row(entry_id, fields) for entry_id, fields in entries if fields]
            await asyncio.to_thread(db.write, rows)
            ids = [entry_id for entry_id, _ in entries]
            await store.xack(events_key, GROUP, *ids)
            await store.xdel(events_key, *ids)
            moved += len(ids)
    if retention_days > 0:
        await asyncio.to_thread(db.forget_before, int(time.time() * 1000) - retention_days * _DAY_MS)
    return moved


def _row(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    event = {_text(k): _text(v) for k, v in fields.items()}
    row: dict[str, Any] = {"id": _text(entry_id), "time_ms": int(event.get("time", 0)),
                           "user_id": event.get("user", ""), "key_id": event.get("key", "")}
    for column in COLUMNS:
        if column not in row:
            value = event.get(column, "")
            row[column] = value if column in ("model", "family") else int(value or 0)
    return row


_database: tuple[str, str, int] = ("", "", 0)


def use_database(db_path: str, database_url: str, retention_days: int) -> None:
    """Tell this worker process's moves where the usage database is (`poolgate worker`, once at start)."""
    global _database
    _database = (db_path, database_url, retention_days)


def move_usage(prefix: str) -> int:
    """The rq job (`poolgate worker`, every MOVE_INTERVAL_SEC): move what is waiting; how many moved."""
    from keypool.jobs import run_with_store

    db_path, database_url, retention_days = _database
    if not db_path and not database_url:
        raise RuntimeError("usage moves run in `poolgate worker`, which says where the usage database is")

    async def work(store: Any) -> int:
        db = open_usage_database(db_path, database_url)
        try:
            return await move_usage_events(store, AccountsSchema(prefix).usage_events, db,
                                           retention_days=retention_days)
        finally:
            db.close()

    return run_with_store(work, "usage moves")


class UsageLedger:
    """The gateway's handle on the usage records: moves waiting events (`move_now`; every MOVE_INTERVAL_SEC
    with `start()`, which the embedded store's gateway does) and reads reports (`report`).

    The database is opened at the first move or report, not at start-up: a gateway whose disk is read-only
    still serves, and says why its report cannot.
    """

    def __init__(self, store: Any, events_key: str, db_path: str, database_url: str, retention_days: int) -> None:
        self._store = store
        self._events_key = events_key
        self._db_path = db_path
        self._database_url = database_url
        self._retention_days = retention_days
        self._db: UsageDatabase | None = None
        self._moving = Repeating(self.move_now, MOVE_INTERVAL_SEC, name="poolgate-usage-mover",
                                 failure="could not move usage events", log=log)
        self._lock = asyncio.Lock()

    async def _database(self) -> UsageDatabase:
        if self._db is None:
            self._db = await asyncio.to_thread(open_usage_database, self._db_path, self._database_url)
        return self._db

    async def move_now(self) -> int:
        async with self._lock:  # the timer and a report asking at once: one pass at a time
            return await move_usage_events(self._store, self._events_key, await self._database(),
                                           retention_days=self._retention_days)

    async def report(self, query: ReportQuery) -> list[dict[str, Any]]:
        db = await self._database()
        return await asyncio.to_thread(db.report, query)

    def start(self) -> None:
        self._moving.start()

    async def stop(self) -> None:
        await self._moving.stop()
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
