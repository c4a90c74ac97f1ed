"""The usage report: `GET /usage` (admin only, AI Proxy's report) and `GET /usage/me` (a user's own month).

    GET /usage      ?month=YYYY-MM (default: this budget month) &user=<id> | &email=<address>
                    &group_by=user|model|day &sort=time|cost|input_tokens|output_tokens|latency_ms|requests
                    (always descending) &skip=0 &limit=100 (at most 1000) &format=json|csv
    GET /usage/me   the caller's own month, with their user token: cost, requests, budget, tokens by model
    GET /admin/budgets             the budget table, USD: {"user:<id>" | email | "@domain" | "*": amount}
    PATCH /admin/budgets           {"<who>": USD, ...}; null removes an entry (0: no budget for them)

The admin pages (web/usage_pages.py) and `/user` read the same functions
(`usage_report`, `user_month`). Rows come from the usage database (`accounts.usage_store`); what settlement
appended since the last move is moved first, so the report is current. Money
is shown in USD. Bad parameters are a 400 naming the parameter; no answer
holds a key or a token.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, Request, Response, get, patch

from accounts.budgets import budget_of, micro_to_usd, usd_to_micro
from accounts.schema import AccountsSchema, token_hash
from accounts.usage_store import GROUPS, SORTS, ReportQuery
from gateway.admin import AdminController, AdminError, require_admin
from gateway.gatekeeper import presented_credential

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_LIMIT = 1000


class UsageController(Controller):
    path = "/usage"
    tags = ["usage"]
    exception_handlers = AdminController.exception_handlers

    @get("/", guards=[require_admin], security=[{"AdminKey": []}])
    async def report(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Every request of a month (or grouped by user, model or day), newest or dearest first; JSON or CSV."""
        app = request.app.state.admin_services
        p = request.query_params
        group_by = p.get("group_by", "")
        if group_by and group_by not in GROUPS:
            raise AdminError(400, "invalid_request_error", f"group_by must be one of {', '.join(GROUPS)}.")
        sort = p.get("sort", "time")
        if sort not in SORTS or (sort == "requests" and not group_by):
            raise AdminError(400, "invalid_request_error", f"sort must be one of {', '.join(sorted(SORTS))} "
                                                           "(requests only with group_by).")
        skip, limit = _count(p.get("skip", "0"), "skip", 10**9), _count(p.get("limit", "100"), "limit", MAX_LIMIT)
        user_id = p.get("user", "").removeprefix("user:")
        if p.get("email"):
            user_id = await _user_by_email(app, p["email"])
            if not user_id:
                raise AdminError(404, "not_found_error", "No user has this email.")
        month, rows = await usage_report(app, p.get("month", ""), user_id=user_id, group_by=group_by, sort=sort,
                                         skip=skip, limit=limit)
        if p.get("format") == "csv" or "text/csv" in request.headers.get("accept", ""):
            return Response(usage_csv(rows), media_type="text/csv",
                            headers={"content-disposition": f'attachment; filename="usage-{month}.csv"'})
        return Response({"month": month, "group_by": group_by or None, "sort": sort, "skip": skip, "limit": limit,
                         "rows": rows})

    @get("/me")
    async def mine(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """The caller's own month (their user token, as on the proxy routes): cost, requests, budget (null: none),
        tokens by model."""
        app = request.app.state.admin_services
        headers = {k.encode().lower(): v.encode() for k, v in request.headers.items()}
        credential = presented_credential(headers, request.query_params.get("key"))
        schema = AccountsSchema(app.settings.redis_prefix)
        user_id = await app.store.hget(schema.user_tokens, token_hash(credential)) if credential else None
        record = await app.store.hgetall(schema.user(_text(user_id))) if user_id else {}
        fields = {_text(k): _text(v) for k, v in record.items()}
        if not fields or fields.get("token_hash") != token_hash(credential or ""):
            raise AdminError(401, "authentication_error", "This needs your user token: Authorization: Bearer <token>.",
                             {"WWW-Authenticate": "Bearer"})
        return await user_month(app, fields["id"], request.query_params.get("month", ""))


async def usage_report(app: Any, month: str, *, user_id: str = "", group_by: str = "", sort: str = "time",
                       skip: int = 0, limit: int = 100) -> tuple[str, list[dict[str, Any]]]:
    """A month's report ("" = this budget month) as `GET /usage` shows it, and the admin pages too: what
    settlement appended is moved first, so it is current. A bad month is a 400 AdminError."""
    month, start_ms, end_ms = _month_range(month, app.settings.budget_time_zone)
    await app.usage_mover.move_now()
    query = ReportQuery(start_ms, end_ms, f"user:{user_id}" if user_id else "", group_by, sort, skip, limit,
                        _offset_ms(app.settings.budget_time_zone))
    return month, [_shown(row, group_by) for row in await app.usage_mover.report(query)]


async def user_month(app: Any, user_id: str, month: str = "") -> dict[str, Any]:
    """One user's month, for `GET /usage/me` and the `/user` page: spend and requests as settlement counts them
    (the user's record), the budget admission holds them to (None: no budget), and tokens by model."""
    month, by_model = await usage_report(app, month, user_id=user_id, group_by="model", sort="cost", limit=MAX_LIMIT)
    s = app.settings
    schema = AccountsSchema(s.redis_prefix)
    cost, requests, email, kind = await app.store.hmget(
        schema.user(user_id), f"cost:{month}", f"requests:{month}", "email", "type")
    budget = 0 if _text(kind or b"") == "special" else await budget_of(
        app.store, schema.budgets, user_id, _text(email or b""), max(usd_to_micro(s.monthly_budget_usd), 0))
    return {
        "month": month, "cost": micro_to_usd(int(cost or 0)), "requests": int(requests or 0),
        "budget": micro_to_usd(budget) if budget > 0 else None, "by_model": by_model,
    }


class BudgetsController(Controller):
    """The budget table at run time (BUDGETS sets it at start-up); it applies from the next request on."""

    path = "/admin/budgets"
    guards = [require_admin]
    tags = ["admin: budgets"]
    security = [{"AdminKey": []}]
    exception_handlers = AdminController.exception_handlers

    @get("/")
    async def read(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        return await _budget_table(request.app.state.admin_services)

    @patch("/")
    async def change(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Set or remove entries: `{"user:<id>": 5, "@school.edu": 2, "*": null}` (USD; null removes)."""
        app = request.app.state.admin_services
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError:
            raise AdminError(400, "invalid_request_error", "The body must be a JSON object.") from None
        if not isinstance(body, dict) or not body:
            raise AdminError(400, "invalid_request_error", 'The body must be an object like {"*": 5}.')
        for who, usd in body.items():
            if not who or (usd is not None and (not isinstance(usd, int | float) or isinstance(usd, bool) or usd < 0)):
                raise AdminError(400, "invalid_request_error", f"{who!r}: a budget is a number of USD >= 0, or null.")
        key = AccountsSchema(app.settings.redis_prefix).budgets
        async with app.store.pipeline(transaction=True) as pipe:
            for who, usd in body.items():
                if usd is None:
                    pipe.hdel(key, who)
                else:
                    pipe.hset(key, who, usd_to_micro(usd))
            await pipe.execute()
        return await _budget_table(app)


async def _budget_table(app: Any) -> dict[str, Any]:
    table = await app.store.hgetall(AccountsSchema(app.settings.redis_prefix).budgets)
    return {"budgets": {_text(k): micro_to_usd(int(v)) for k, v in sorted(table.items())}}


def _month_range(given: str, zone_name: str) -> tuple[str, int, int]:
    """"YYYY-MM" (default: now) as [start, end) in ms, months turning at midnight on the 1st in BUDGET_TIME_ZONE."""
    zone = ZoneInfo(zone_name)
    if not given:
        now = datetime.now(zone)
        given = f"{now.year:04d}-{now.month:02d}"
    match = _MONTH.match(given)
    if match is None:
        raise AdminError(400, "invalid_request_error", "month must look like 2026-03 (YYYY-MM).")
    year, month = int(match[1]), int(match[2])
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    return given, int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _offset_ms(zone_name: str) -> int:
    offset = datetime.now(UTC).astimezone(ZoneInfo(zone_name)).utcoffset()
    return int(offset.total_seconds() * 1000) if offset else 0


def _count(value: str, name: str, most: int) -> int:
    if not value.isdigit() or int(value) > most:
        raise AdminError(400, "invalid_request_error", f"{name} must be a whole number from 0 to {most}.")
    return int(value)


def _shown(row: dict[str, Any], group_by: str) -> dict[str, Any]:
    """A database row as the report shows it: USD, ISO times, the group's own name."""
    shown = dict(row)
    shown["cost"] = micro_to_usd(int(row.get("cost") or 0))
    if group_by:
        group = shown.pop("grp")
        if group_by == "day":
            group = datetime.fromtimestamp(int(group) * 86400, UTC).date().isoformat()
        shown = {group_by: group, **shown}
        shown["last_time"] = _iso(shown.pop("last_ms"))
        return shown
    shown["time"] = _iso(shown.pop("time_ms"))
    shown["user"] = shown.pop("user_id")
    shown["key"] = shown.pop("key_id")
    shown["estimated"] = bool(shown["estimated"])
    return shown


def _iso(ms: Any) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def usage_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


async def _user_by_email(app: Any, email: str) -> str:
    """The id of the user with this email (an admin's report filter: reads every user, never the hot path)."""
    schema = AccountsSchema(app.settings.redis_prefix)
    for user_id in await app.store.zrange(schema.users, 0, -1):
        if _text(await app.store.hget(schema.user(_text(user_id)), "email") or b"") == email:
            return _text(user_id)
    return ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
