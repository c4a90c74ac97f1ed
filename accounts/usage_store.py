"""Where usage records live for good: SQLite by default (USAGE_DB_PATH), PostgreSQL with USAGE_DATABASE_URL.

One table, `usage_events`, one row per settled request, keyed by its id in the
store's events stream, so writing the same event twice (a mover that died after
writing but before acknowledging) keeps one row. The report (`GET /usage`)
reads it here: filtered by month and user, sorted, paged, or grouped by user,
model or day. Money is integer micro-dollars, times are ms (the store's clock).

Both databases are driven through the DB-API from a worker thread
(`asyncio.to_thread`): the report and the mover are background work, never the
hot path.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

COLUMNS = (
    "id", "time_ms", "user_id", "model", "family", "key_id", "input_tokens", "output_tokens", "cached_tokens",
    "cache_write_tokens", "cost", "status", "latency_ms", "queue_ms", "estimated",
)
_TEXT = {"id", "user_id", "model", "family", "key_id"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage_events (id TEXT PRIMARY KEY, "
    + ", ".join(f"{c} {'TEXT' if c in _TEXT else 'BIGINT'} NOT NULL" for c in COLUMNS[1:]) + ")",
    "CREATE INDEX IF NOT EXISTS usage_events_time ON usage_events (time_ms)",
    "CREATE INDEX IF NOT EXISTS usage_events_user ON usage_events (user_id, time_ms)",
)
# What a report may be sorted by (always descending), per kind of report.
SORTS = {"time", "cost", "input_tokens", "output_tokens", "latency_ms", "requests"}
GROUPS = ("user", "model", "day")
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """One report: [start_ms, end_ms) (a budget month), optionally one user, sorted descending, paged."""

    start_ms: int
    end_ms: int
    user_id: str = ""
    group_by: str = ""  # "" (one row per request) | user | model | day
    sort: str = "time"
    skip: int = 0
    limit: int = 100
    day_offset_ms: int = 0  # BUDGET_TIME_ZONE's offset, so a day starts at its midnight


class UsageDatabase:
    """The usage table on SQLite or PostgreSQL (`open_usage_database`); thread-safe, one connection."""

    def __init__(self, connection: Any, placeholder: str) -> None:
        self._db = connection
        self._mark = placeholder
        self._lock = threading.Lock()
        with self._lock:
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.commit()

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Add these events; one already written (same id) is kept as it was."""
        if not rows:
            return
        marks = ", ".join([self._mark] * len(COLUMNS))
        sql = f"INSERT INTO usage_events ({', '.join(COLUMNS)}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING"
        with self._lock:
            cursor = self._db.cursor()
            cursor.executemany(sql, [tuple(row[c] for c in COLUMNS) for row in rows])
            self._db.commit()

    def forget_before(self, time_ms: int) -> int:
        """USAGE_RETENTION_DAYS: delete what is older; how many rows went."""
        with self._lock:
            cursor = self._db.execute(f"DELETE FROM usage_events WHERE time_ms < {self._mark}", (time_ms,))
            self._db.commit()
            return int(cursor.rowcount or 0)

    def report(self, query: ReportQuery) -> list[dict[str, Any]]:
        where = f"time_ms >= {self._mark} AND time_ms < {self._mark}"
        params: list[Any] = [query.start_ms, query.end_ms]
        if query.user_id:
            where += f" AND user_id = {self._mark}"
            params.append(query.user_id)
        if query.group_by:
            key = {"user": "user_id", "model": "model",
                   "day": f"((time_ms + {int(query.day_offset_ms)}) / {_DAY_MS})"}[query.group_by]
            order = {"time": "last_ms", "requests": "requests"}.get(query.sort, query.sort)
            sql = (f"SELECT {key} AS grp, COUNT(*) AS requests, SUM(cost) AS cost, SUM(input_tokens) AS input_tokens, "
                   f"SUM(output_tokens) AS output_tokens, SUM(cached_tokens) AS cached_tokens, MAX(time_ms) AS last_ms "
                   f"FROM usage_events WHERE {where} GROUP BY grp ORDER BY {order} DESC, grp LIMIT {self._mark} "
                   f"OFFSET {self._mark}")
        else:
            order = {"time": "time_ms", "requests": "time_ms"}.get(query.sort, query.sort)
            sql = (f"SELECT {', '.join(COLUMNS)} FROM usage_events WHERE {where} ORDER BY {order} DESC, id DESC "
                   f"LIMIT {self._mark} OFFSET {self._mark}")
        params += [query.limit, query.skip]
        with self._lock:
            cursor = self._db.execute(sql, tuple(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_usage_database(db_path: str, database_url: str = "") -> UsageDatabase:
    """PostgreSQL when `database_url` is set (psycopg 3), else the SQLite file `db_path`."""
    if database_url:
        import psycopg

        return UsageDatabase(psycopg.connect(database_url), "%s")
    return UsageDatabase(sqlite3.connect(db_path, check_same_thread=False), "?")
