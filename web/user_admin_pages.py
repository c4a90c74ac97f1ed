"""The admin pages for users, under `/admin/manage/users`: list, create, view, edit, import and export.

    GET  /admin/manage/users                  ?q=&type=&sort=&order=&page=
    POST /admin/manage/users                  create; the page shows the token this once, with a copy button
    GET  /admin/manage/users/export           poolgate's export, as a file (token hashes, never tokens)
    POST /admin/manage/users/import           a file: poolgate's export or the OAI Reverse Proxy's
    GET|POST /admin/manage/users/{id}         view and edit
    POST /admin/manage/users/{id}/{action}    disable (with a reason), enable, rotate-token, refresh-quota,
                                              revoke-sessions, delete

A form is turned into the admin API's JSON body and checked by the same
function (`accounts.users.read_user_fields`), then the user book does what the
API would: one implementation of each action. Signed-in session and CSRF token
as on every admin page (web/admin_frame.py).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.params import FromPath

from accounts.import_export import ImportProblem, apply_import, export_document, read_import
from accounts.schema import AccountsSchema
from accounts.sessions import SessionBook
from accounts.users import MAX_REASON_CHARS, SORTS, USER_TYPES, UserBook, UserInputError, checked_text, read_user_fields
from gateway.admin import AdminError
from web.admin_frame import HOME_PATH, PAGE_ERRORS, read_form, render, require_session, see, services, settings_of
from web.page_format import NOTICES, when

log = logging.getLogger("poolgate.admin")

USERS_PATH = HOME_PATH + "/users"
PER_PAGE = 50
_USER_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_IMPORT_BYTES = 32 * 1024 * 1024


class UserPages(Controller):
    path = USERS_PATH
    guards = [require_session]
    exception_handlers = PAGE_ERRORS
    include_in_schema = False

    @get("/")
    async def list_users(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return await _list_page(request)

    @post("/", status_code=200)
    async def create_user(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await read_form(request)
        book = _book(request)
        try:
            body = await _user_body(form, book, creating=True)
            changes = read_user_fields(body, book.families, creating=True)
        except UserInputError as problem:
            return await _list_page(request, status=400, problem=f"Not created: {problem.field} {problem.message}.")
        user, token = await book.create(changes, settings_of(request).token_quotas())
        log.info("admin pages: created user %s (%s)", user["id"], user["type"])
        return _user_page(request, book, user, token=token, notice="User created. Its token is shown this once.")

    @get("/export")
    async def export_users(self, request: Request[Any, Any, Any]) -> Response[Any]:
        book = _book(request)
        document = export_document(await book.raw_records(), book.families)
        return Response(json.dumps(document, indent=1), media_type="application/json", headers={
            "Content-Disposition": 'attachment; filename="poolgate-users.json"', "Cache-Control": "no-store"})

    @post("/import", status_code=200, request_max_body_size=MAX_IMPORT_BYTES)
    async def import_users(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await read_form(request)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return await _list_page(request, status=400, problem="Nothing was imported: choose a file to upload.")
        try:
            document = json.loads(await upload.read())
        except (ValueError, UnicodeDecodeError):
            return await _list_page(request, status=400, problem="Nothing was imported: the file is not JSON.")
        book = _book(request)
        seconds, micros = await book.store.time()
        try:
            plan = read_import(document, book.families, int(seconds) * 1000 + int(micros) // 1000)
            result = await apply_import(book, plan)
        except ImportProblem as problem:
            return await _list_page(request, status=400, problem=f"Nothing was imported: {problem}")
        log.info("admin pages: imported %d user(s), %d replaced", result["imported"], result["replaced"])
        return await _list_page(
            request, notice=f"Imported {result['imported']} user(s), {result['replaced']} of them replacing one.")

    @get("/{user_id:str}")
    async def view_user(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> Response[Any]:
        book = _book(request)
        return _user_page(request, book, await _user(book, user_id),
                          notice=NOTICES.get(request.query_params.get("done", ""), ""))

    @post("/{user_id:str}", status_code=303)
    async def edit_user(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> Response[Any]:
        form = await read_form(request)
        book = _book(request)
        user = await _user(book, user_id)
        try:
            changes = read_user_fields(await _user_body(form, book, creating=False), book.families, creating=False)
            await book.update(user["id"], changes)
        except UserInputError as problem:
            return _user_page(request, book, user, status=400,
                              problem=f"Nothing was saved: {problem.field} {problem.message}.")
        log.info("admin pages: updated user %s", user["id"])
        return see(f"{USERS_PATH}/{user['id']}", "user-saved")

    @post("/{user_id:str}/{action:str}", status_code=303)
    async def user_action(self, request: Request[Any, Any, Any], user_id: FromPath[str],
                          action: FromPath[str]) -> Response[Any]:
        form = await read_form(request)
        book = _book(request)
        uid = (await _user(book, user_id))["id"]
        if action == "disable":
            try:
                reason = checked_text("reason", str(form.get("reason") or "") or "disabled by an admin",
                                      MAX_REASON_CHARS)
            except UserInputError as problem:
                raise AdminError(400, "invalid_request_error", f"Invalid reason: {problem.message}") from None
            await book.disable(uid, reason)
        elif action == "enable":
            await book.enable(uid)
        elif action == "refresh-quota":
            await book.refresh_quota(uid)
        elif action == "rotate-token":
            token = await book.rotate_token(uid)
            log.info("admin pages: rotated the token of user %s", uid)
            return _user_page(request, book, await _user(book, uid), token=token,
                              notice="A new token: the old one no longer works. It is shown this once.")
        elif action == "revoke-sessions":  # what POST /admin/users/{id}/revoke-sessions does
            store = services(request).store
            await SessionBook(store, AccountsSchema(settings_of(request).redis_prefix)).revoke(uid)
        elif action == "delete":
            await book.delete(uid)
            log.info("admin pages: deleted user %s", uid)
            return see(USERS_PATH, "user-delete")
        else:
            raise AdminError(404, "not_found_error", "No such user action.")
        log.info("admin pages: %s user %s", action, uid)
        return see(f"{USERS_PATH}/{uid}", f"user-{action}")


def _book(request: Request[Any, Any, Any]) -> UserBook:
    s = settings_of(request)
    return UserBook(services(request).store, AccountsSchema(s.redis_prefix), tuple(s.token_quotas()))


async def _user(book: UserBook, user_id: str) -> dict[str, Any]:
    # Never echo what does not look like a user id: an admin may paste a token here by mistake.
    user = await book.get(user_id) if _USER_ID.match(user_id) else None
    if user is None:
        raise AdminError(404, "not_found_error", "No user with that id.")
    return user


async def _list_page(request: Request[Any, Any, Any], *, status: int = 200, notice: str = "",
                     problem: str = "") -> Response[Any]:
    query = request.query_params
    sort = str(query.get("sort")) if query.get("sort") in SORTS else "created_at"
    order = "asc" if query.get("order") == "asc" else "desc"
    type_ = query.get("type") if query.get("type") in USER_TYPES else ""
    search = (query.get("q") or "")[:80]
    page = int(query["page"]) if (query.get("page") or "").isdigit() and int(query["page"]) > 0 else 1
    book = _book(request)
    users, total = await book.find(type_=type_ or None, nickname=search or None, sort=sort,
                                   descending=order == "desc", page=page, per_page=PER_PAGE)
    return render(
        request, "users.html", status=status, users=users, total=total, page=page, pages=max(1, -(-total // PER_PAGE)),
        sort=sort, order=order, type_=type_, q=search, sorts=SORTS, types=USER_TYPES, families=book.families,
        when=when, problem=problem, notice=notice or NOTICES.get(query.get("done", ""), ""),
    )


def _user_page(request: Request[Any, Any, Any], book: UserBook, user: dict[str, Any], *, status: int = 200,
               token: str | None = None, notice: str = "", problem: str = "") -> Response[Any]:
    return render(request, "user_admin.html", status=status, user=user, token=token, families=book.families,
                  when=when, notice=notice, problem=problem, default_max_ips=settings_of(request).max_ips_per_user,
                  sessions_on=services(request).signin.sessions is not None)


async def _user_body(form: FormMultiDict, book: UserBook, *, creating: bool) -> dict[str, Any]:
    """The admin API's JSON body for a create or edit form: an empty optional field is "unset" (null on edit)."""
    body: dict[str, Any] = {}
    for name in ("nickname", "note", "email"):
        text = str(form.get(name) or "").strip()
        if text or not creating:
            body[name] = text or None
    max_ips = str(form.get("max_ips") or "").strip()
    if max_ips or not creating:
        body["max_ips"] = _count("max_ips", max_ips) if max_ips else None
    if creating or "public_shown" in form:
        body["public"] = form.get("public") == "on"
    kind = str(form.get("type") or ("normal" if creating else "")).strip()
    if kind:
        body["type"] = kind
    hours = str(form.get("duration_hours") or "").strip()
    if hours:  # a temporary user's length, from now on the store's clock
        seconds, _micros = await book.store.time()
        body["expires_at"] = (int(seconds) + int(_count("duration_hours", hours, positive=True) * 3600)) * 1000
    quotas: dict[str, int] = {}
    refresh: dict[str, int | None] = {}
    for family in book.families:
        limit = str(form.get(f"quota:{family}") or "").strip()
        if limit:
            quotas[family] = _count(f"quotas.{family}", limit)
        amount = str(form.get(f"refresh:{family}") or "").strip()
        if amount:
            refresh[family] = _count(f"refresh.{family}", amount)
        elif not creating and f"refresh:{family}" in form:
            refresh[family] = None
    if quotas:
        body["quotas"] = quotas
    if refresh:
        body["refresh"] = refresh
    return body


def _count(name: str, text: str, *, positive: bool = False) -> int:
    if not text.isdigit() or (positive and int(text) < 1):
        raise UserInputError(name, "must be a whole number" + (" from 1" if positive else ""))
    return int(text)
