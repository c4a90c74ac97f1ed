"""`/user`: a person looks up their own token's quotas, the OAI Reverse Proxy's `/user/lookup`.

The token is posted in a form, never put in the address, so it does not land
in access logs, the browser's history or a Referer. The page shows only the
user that token belongs to: type, prompts, quotas left per family and when they
next refresh, expiry, this month's spend, requests and budget (what `GET /usage/me`
answers, from the same function), and the base URLs to paste into a client. It never shows
the token (only its last characters), another user, or anything of the pool.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get, post

from accounts.refresh import next_refresh_at
from accounts.schema import AccountsSchema, token_hash
from accounts.users import UserBook
from gateway.settings import refresh_cron
from gateway.usage_routes import user_month
from web.admin_frame import html_response, services, settings_of, templates
from web.page_format import usd, when
from web.status import page_title

MAX_TOKEN_CHARS = 200


@get(["/user", "/user/lookup"], include_in_schema=False)  # /user/lookup: the OAI Reverse Proxy's address
async def user_lookup_form(request: Request[Any, Any, Any]) -> Response[Any]:
    return _page(request, 200, user=None, problem="")


@post(["/user", "/user/lookup"], include_in_schema=False, status_code=200, request_max_body_size=16 * 1024)
async def user_lookup(request: Request[Any, Any, Any]) -> Response[Any]:
    """The user whose token was posted; 404 with the form again when no user has it."""
    token = (await request.form()).get("token")
    user = await _user_of(request, token.strip()) if isinstance(token, str) else None
    if user is None:
        return _page(request, 404, user=None, problem="No user has that token. Check it and try again.")
    return _page(request, 200, user=user, problem="", month=await user_month(services(request), user["id"]))


async def _user_of(request: Request[Any, Any, Any], token: str) -> dict[str, Any] | None:
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    s = settings_of(request)
    schema = AccountsSchema(s.redis_prefix)
    store = services(request).store
    user_id = await store.hget(schema.user_tokens, token_hash(token))
    if user_id is None:
        return None
    return await UserBook(store, schema, tuple(s.token_quotas())).get(
        user_id.decode() if isinstance(user_id, bytes) else str(user_id))


def _page(request: Request[Any, Any, Any], status: int, *, user: dict[str, Any] | None, problem: str,
          month: dict[str, Any] | None = None) -> Response[Any]:
    s = settings_of(request)
    base = (s.public_url or str(request.base_url)).rstrip("/") + "/" + s.proxy_endpoint_route.strip("/")
    cron = refresh_cron(s.quota_refresh_period)
    page = templates.get_template("user_lookup.html").render(
        title=page_title(s), user=user, problem=problem, when=when, month=month, usd=usd,
        next_refresh_ms=int(next_refresh_at(cron, time.time()) * 1000) if cron else None,
        endpoints={"openai": f"{base}/openai", "anthropic": f"{base}/anthropic"},
    )
    return html_response(page, status)


user_page_routes = [user_lookup_form, user_lookup]
