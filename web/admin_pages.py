"""The admin pages in a browser: log in with ADMIN_KEY at `/admin`, then keys, policy and maintenance.

    GET  /admin                          the login form (or, signed in, on to the pages)
    POST /admin/login | /admin/logout
    GET  /admin/manage[/keys]            the pool per provider and family; add, disable, enable, recheck, remove
    GET|POST /admin/manage/policy        blocked addresses and origins, /admin's networks
    POST /admin/manage/policy/prompt-filter   the prompt filter's phrases and message
    GET  /admin/manage/maintenance       refresh all quotas, expire temporary users, recheck all keys

Each action calls the function the admin API calls (gateway/admin.py,
accounts/users.py, gateway/blocks.py, gateway/prompt_filter.py): one implementation of each, never an
HTTP call to ourselves. Users have their own pages (web/user_admin_pages.py).
A wrong admin key here counts toward the same lockout as the API's.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from litestar import Controller, Request, Response, get, post, route
from litestar.params import FromPath

from accounts.schema import AccountsSchema
from accounts.users import UserBook
from gateway.admin import AdminError, add_pool_keys, recheck_keys, remove_pool_key, set_key_disabled
from gateway.admin_guard import AdminGuard
from gateway.admin_policy import prompt_filter_of
from gateway.blocks import Blocks, PolicyLists
from gateway.prompt_filter import PromptRules
from keypool.inventory import KeyInventory
from keypool.schema import PoolSchema
from web.admin_frame import (
    HOME_PATH,
    LOGIN_PATH,
    PAGE_ERRORS,
    PageRefused,
    is_https,
    read_form,
    render,
    require_pages_on,
    require_session,
    see,
    services,
    sessions_of,
    settings_of,
)
from web.page_format import NOTICES, lines_of, when
from web.sessions import LOGIN_COOKIE, SESSION_COOKIE, cookie, csrf_matches, new_login_token

log = logging.getLogger("poolgate.admin")


@get(LOGIN_PATH, guards=[require_pages_on], exception_handlers=PAGE_ERRORS, include_in_schema=False)
async def admin_home(request: Request[Any, Any, Any]) -> Response[Any]:
    """Signed in: on to the pages. Otherwise the login form, with its double-submit CSRF cookie."""
    if await sessions_of(request).is_open(request.cookies.get(SESSION_COOKIE, "")):
        return see(HOME_PATH + "/keys")
    return _login_form(request, 200, "")


def _login_form(request: Request[Any, Any, Any], status: int, problem: str) -> Response[Any]:
    token = new_login_token()
    response = render(request, "admin_login.html", status=status, login_csrf=token, problem=problem)
    response.cookies.append(cookie(LOGIN_COOKIE, token, max_age=3600, secure=is_https(request)))
    return response


@post(LOGIN_PATH + "/login", guards=[require_pages_on], exception_handlers=PAGE_ERRORS, include_in_schema=False,
      status_code=303, request_max_body_size=16 * 1024)  # anyone may post here: a login form is small
async def admin_login(request: Request[Any, Any, Any]) -> Response[Any]:
    """Check the admin key against the lockout (the API's, per address) and open a session."""
    s = settings_of(request)
    form = await request.form()
    if not csrf_matches(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")):
        raise PageRefused(403, "This login form is out of date or did not come from this site. Open /admin again.")
    given = form.get("admin_key")
    right = isinstance(given, str) and hmac.compare_digest(given.encode(), s.admin_key.encode())
    address = request.client.host if request.client else "unknown"
    verdict = await AdminGuard.for_store(services(request).store).judge(
        s.redis_prefix, address, wrong=not right, max_failures=s.admin_lockout_failures,
        lockout_sec=s.admin_lockout_sec,
    )
    if verdict.locked:
        response = _login_form(request, 429, "Too many failed admin logins from this address; try again later.")
        response.headers["Retry-After"] = str(verdict.retry_after_sec)
        return response
    if not right:
        log.warning("admin pages: wrong admin key from %s (%d failed)", address, verdict.failures)
        return _login_form(request, 401, "That is not this proxy's admin key.")
    session_id = await sessions_of(request).open()
    log.info("admin pages: signed in from %s", address)
    secure = is_https(request)
    response = see(HOME_PATH + "/keys")
    response.cookies.extend([
        cookie(SESSION_COOKIE, session_id, max_age=s.admin_session_ttl_sec, secure=secure),
        cookie(LOGIN_COOKIE, "", max_age=0, secure=secure),
    ])
    return response


@post(LOGIN_PATH + "/logout", guards=[require_session], exception_handlers=PAGE_ERRORS, include_in_schema=False,
      status_code=303)
async def admin_logout(request: Request[Any, Any, Any]) -> Response[Any]:
    await read_form(request)
    await sessions_of(request).close(request.cookies.get(SESSION_COOKIE, ""))
    response = see(LOGIN_PATH)
    response.cookies.append(cookie(SESSION_COOKIE, "", max_age=0, secure=is_https(request)))
    return response


class AdminPages(Controller):
    """The signed-in pages for keys, policy and maintenance."""

    path = HOME_PATH
    guards = [require_session]
    exception_handlers = PAGE_ERRORS
    include_in_schema = False

    @get("/")
    async def home(self) -> Response[Any]:
        return see(HOME_PATH + "/keys")

    @get("/keys")
    async def keys(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return await _keys_page(request)

    @post("/keys", status_code=200)
    async def add_keys(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Add a pasted list (one per line, or comma-separated); the answer never repeats what was pasted."""
        form = await read_form(request)
        provider = str(form.get("provider") or "")
        try:
            result = await add_pool_keys(request, provider, lines_of(str(form.get("keys") or ""), commas=True))
        except AdminError as error:
            return await _keys_page(request, status=error.status, problem=error.message)
        added, present = len(result["added"]), len(result["already_present"])
        check = {"scheduled": "; each is being checked", "off": "; key checks are off"}.get(result["check"], "")
        notice = f"Added {added} {provider} key(s); {present} already in the pool{check}."
        return await _keys_page(request, notice=notice)

    @post("/keys/recheck", status_code=303)
    async def recheck_all(self, request: Request[Any, Any, Any]) -> Response[Any]:
        await read_form(request)
        await recheck_keys(request, None)
        return see(HOME_PATH + "/keys", "recheck-all")

    @post("/keys/{key_id:str}/{action:str}", status_code=303)
    async def key_action(self, request: Request[Any, Any, Any], key_id: FromPath[str],
                         action: FromPath[str]) -> Response[Any]:
        await read_form(request)
        if action == "disable":
            await set_key_disabled(request, key_id, True)
        elif action == "enable":
            await set_key_disabled(request, key_id, False)
        elif action == "recheck":
            await recheck_keys(request, [key_id])
        elif action == "remove":
            await remove_pool_key(request, key_id)
        else:
            raise AdminError(404, "not_found_error", "No such key action.")
        return see(HOME_PATH + "/keys", f"key-{action}")

    @get("/policy")
    async def policy(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return _policy_page(request, _blocks(request).lists)

    @post("/policy", status_code=303)
    async def save_policy(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await read_form(request)
        wanted = {name: lines_of(str(form.get(name) or ""), commas=False)
                  for name in ("ip_blacklist", "admin_whitelist", "blocked_origins")}
        try:
            lists = PolicyLists.from_json(wanted)
        except ValueError as error:
            return _policy_page(request, PolicyLists(**{k: tuple(v) for k, v in wanted.items()}), status=400,
                                problem=f"Nothing was saved: {error}.")
        await _blocks(request).replace(lists)
        log.info("admin pages: policy lists replaced (%d blocked networks, %d admin networks, %d blocked origins)",
                 len(lists.ip_blacklist), len(lists.admin_whitelist), len(lists.blocked_origins))
        return see(HOME_PATH + "/policy", "policy-saved")

    @post("/policy/prompt-filter", status_code=303)
    async def save_prompt_filter(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """One regular expression per line (commas are part of a phrase here), and the refusal's message."""
        form = await read_form(request)
        prompt_filter = prompt_filter_of(request)
        phrases = lines_of(str(form.get("reject_phrases") or ""), commas=False)
        message = str(form.get("reject_message") or "").strip()
        try:
            rules = PromptRules.from_json({"reject_phrases": phrases, "reject_message": message},
                                          prompt_filter.default_message)
        except ValueError as error:
            shown = PromptRules(tuple(phrases), message)
            return _policy_page(request, _blocks(request).lists, status=400, problem=f"Nothing was saved: {error}.",
                                rules=shown)
        await prompt_filter.replace(rules)
        log.info("admin pages: prompt filter replaced (%d phrases)", len(rules.reject_phrases))
        return see(HOME_PATH + "/policy", "filter-saved")

    @get("/maintenance")
    async def maintenance(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return render(request, "maintenance.html", notice=NOTICES.get(request.query_params.get("done", ""), ""))

    @post("/maintenance/{task:str}", status_code=200)
    async def run_maintenance(self, request: Request[Any, Any, Any], task: FromPath[str]) -> Response[Any]:
        await read_form(request)
        if task == "refresh-quotas":
            notice = f"Refreshed the quotas of {await _book(request).refresh_all_quotas()} user(s)."
        elif task == "expire-temporary":
            notice = f"Disabled {await expire_temporary_users(_book(request))} expired temporary user(s)."
        elif task == "recheck-keys":
            notice = f"Scheduled a check of {len((await recheck_keys(request, None))['scheduled'])} key(s)."
        else:
            raise AdminError(404, "not_found_error", "No such maintenance task.")
        log.info("admin pages: maintenance %s: %s", task, notice)
        return render(request, "maintenance.html", notice=notice)

    @route("/{rest:path}", http_method=["GET", "POST"])
    async def unknown(self, rest: FromPath[str]) -> None:
        """A mistyped page address: a page saying so (not the API's Bearer challenge, which counts a failure)."""
        raise AdminError(404, "not_found_error", "No such admin page.")


async def _keys_page(request: Request[Any, Any, Any], *, status: int = 200, notice: str = "",
                     problem: str = "") -> Response[Any]:
    app = services(request)
    keys = await KeyInventory(app.store, PoolSchema(app.settings.redis_prefix)).describe()
    keys.sort(key=lambda k: (k["provider"] or "", k["added_at_ms"], k["id"]))
    summary = await request.app.state.status_page.status(request)  # the status page's per-family counts
    return render(
        request, "keys.html", status=status, keys=keys, families=summary["families"], when=when,
        checks_on=app.key_checks.enabled, notice=notice or NOTICES.get(request.query_params.get("done", ""), ""),
        problem=problem,
    )


def _policy_page(request: Request[Any, Any, Any], lists: PolicyLists, *, status: int = 200,
                 problem: str = "", rules: PromptRules | None = None) -> Response[Any]:
    return render(request, "policy.html", status=status, lists=lists, problem=problem,
                  notice=NOTICES.get(request.query_params.get("done", ""), ""),
                  rules=rules or prompt_filter_of(request).rules)


def _blocks(request: Request[Any, Any, Any]) -> Blocks:
    blocks: Blocks = request.app.state.policy_blocks  # set when the app starts
    return blocks


def _book(request: Request[Any, Any, Any]) -> UserBook:
    s = settings_of(request)
    return UserBook(services(request).store, AccountsSchema(s.redis_prefix), tuple(s.token_quotas()))


async def expire_temporary_users(book: UserBook) -> int:
    """Disable every temporary user whose end (store time) has passed; how many. Their token was refused from
    that moment already (admit.lua): this makes it show on the users' page and in exports."""
    seconds, micros = await book.store.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    users, _total = await book.find(type_="temporary", disabled=False, per_page=1_000_000)
    expired = 0
    for user in users:
        if user["expires_at"] and user["expires_at"] <= now_ms:
            expired += await book.disable(user["id"], "temporary user expired")
    return expired


admin_page_routes = [admin_home, admin_login, admin_logout, AdminPages]
