"""The admin page for usage and spend, `/admin/manage/usage`: a month by user and by model, a daily chart, CSV.

    GET /admin/manage/usage        ?month=YYYY-MM (default: this budget month)
    GET /admin/manage/usage/csv    ?month=&group_by=user|model|day (empty: every request), as a file

The figures are `GET /usage`'s, read with the same function (`usage_report` in
gateway/usage_routes.py), so the page, the API and the CSV never disagree.
Signed-in session as on every admin page (web/admin_frame.py).
"""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.response import Stream

from accounts.schema import AccountsSchema
from accounts.usage_store import GROUPS
from gateway.admin import AdminError
from gateway.usage_routes import MAX_LIMIT, usage_csv, usage_report
from web.admin_frame import HOME_PATH, PAGE_ERRORS, render, require_session, services, settings_of
from web.chart import daily_chart
from web.page_format import usd

USAGE_PATH = HOME_PATH + "/usage"
TOP_USERS = 100  # the page lists the dearest users; the CSV has them all


class UsagePages(Controller):
    path = USAGE_PATH
    guards = [require_session]
    exception_handlers = PAGE_ERRORS
    include_in_schema = False

    @get("/")
    async def usage(self, request: Request[Any, Any, Any]) -> Response[Any]:
        app = services(request)
        asked = request.query_params.get("month", "")
        month, by_model = await usage_report(app, asked, group_by="model", sort="cost", limit=MAX_LIMIT)
        _, by_user = await usage_report(app, month, group_by="user", sort="cost", limit=TOP_USERS + 1)
        _, by_day = await usage_report(app, month, group_by="day", sort="time", limit=31)
        year, number = int(month[:4]), int(month[5:])
        days = calendar.monthrange(year, number)[1]
        spend = {int(row["day"][8:10]): row["cost"] for row in by_day if row["day"].startswith(month)}
        return render(
            request, "usage.html", month=month, by_model=by_model, by_user=await _named(request, by_user[:TOP_USERS]),
            more_users=len(by_user) > TOP_USERS, chart=daily_chart(month, days, spend), usd=usd,
            total_cost=sum(row["cost"] for row in by_model), total_requests=sum(row["requests"] for row in by_model),
            previous=_step(year, number, -1), following=_step(year, number, 1), groups=GROUPS,
        )

    @get("/csv")
    async def usage_file(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """The month as CSV, as `GET /usage?format=csv` gives it: every request (all of them, page by page), or
        grouped."""
        app = services(request)
        group_by = request.query_params.get("group_by", "")
        if group_by and group_by not in GROUPS:
            raise AdminError(400, "invalid_request_error", f"group_by must be one of {', '.join(GROUPS)}.")
        month, first = await usage_report(app, request.query_params.get("month", ""), group_by=group_by,
                                          limit=MAX_LIMIT)  # a bad month is refused here, before the file starts
        name = f"usage-{month}{'-by-' + group_by if group_by else ''}.csv"
        return Stream(_csv_pages(app, month, group_by, first), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


async def _csv_pages(app: Any, month: str, group_by: str, first: list[dict[str, Any]]) -> AsyncIterator[str]:
    yield usage_csv(first)
    if group_by or len(first) < MAX_LIMIT:
        return
    # Newest first: a request settled while the file is written pushes older rows a place down, so a row can
    # come round twice; its id says so.
    seen = {row["id"] for row in first}
    skip = MAX_LIMIT
    while True:
        _, rows = await usage_report(app, month, skip=skip, limit=MAX_LIMIT)
        fresh = [row for row in rows if row["id"] not in seen]
        seen.update(row["id"] for row in fresh)
        if fresh:
            yield usage_csv(fresh).partition("\r\n")[2]  # the header went out with the first page
        if len(rows) < MAX_LIMIT:
            return
        skip += MAX_LIMIT


async def _named(request: Request[Any, Any, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with the nickname of its user (a user's identity is "user:{id}"; anyone else is an address)."""
    store = services(request).store
    schema = AccountsSchema(settings_of(request).redis_prefix)
    named = []
    for row in rows:
        user_id = row["user"].removeprefix("user:") if row["user"].startswith("user:") else ""
        nickname = await store.hget(schema.user(user_id), "nickname") if user_id else None
        if isinstance(nickname, bytes):
            nickname = nickname.decode()
        named.append({**row, "user_id": user_id, "nickname": nickname or ""})
    return named


def _step(year: int, month: int, by: int) -> str:
    index = year * 12 + month - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
